package controller

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/controller/service"
	"github.com/rik-org/rik/internal/store/bolt"
	"github.com/rik-org/rik/internal/workload"
)

func TestNewServerNeedsStore(t *testing.T) {
	if _, err := NewServer(Config{}); err == nil {
		t.Error("NewServer without a store succeeded")
	}
}

func TestNewServerChecksAuthConfig(t *testing.T) {
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := NewServer(Config{Store: st}); err == nil || !strings.Contains(err.Error(), "admin token file") {
		t.Errorf("no admin token file: %v", err)
	}
	if _, err := NewServer(Config{Store: st, Insecure: true, TLS: &tls.Config{}}); err == nil || !strings.Contains(err.Error(), "insecure and TLS") {
		t.Errorf("insecure with TLS: %v", err)
	}
}

func TestRunServesAndShutsDown(t *testing.T) {
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sched := startFakeScheduler(t, "127.0.0.1:0")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Config{Listener: ln, Store: st, SchedulerAddr: sched.addr, Insecure: true}) }()
	sched.waitSubscribed(t)
	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("healthz %d", resp.StatusCode)
	}
	// an open event stream must not hold the shutdown
	events, err := http.Get("http://" + ln.Addr().String() + "/api/v0/events")
	if err != nil {
		t.Fatal(err)
	}
	defer events.Body.Close()
	ended := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, events.Body); ended <- err }()
	cancel()
	select {
	case err := <-ended:
		if err != nil {
			t.Errorf("event stream ended with %v, want a clean end", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("event stream still open after shutdown")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if _, err := http.Get("http://" + ln.Addr().String() + "/healthz"); err == nil {
		t.Error("still serving after shutdown")
	}
}

func TestRunListenError(t *testing.T) {
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	err = Run(t.Context(), Config{Addr: "256.0.0.1:99999", Store: st, Insecure: true})
	if err == nil || !strings.Contains(err.Error(), "listening") {
		t.Errorf("Run on a bad address: %v", err)
	}
}

func TestSchedulerTarget(t *testing.T) {
	for in, want := range map[string]string{
		"http://localhost:4996": "localhost:4996",
		"http://10.0.0.1:4996/": "10.0.0.1:4996",
		"localhost:4996":        "localhost:4996",
		"https://sched:1":       "sched:1",
		"dns:///scheduler:4996": "dns:///scheduler:4996",
	} {
		if got := schedulerTarget(in); got != want {
			t.Errorf("schedulerTarget(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAdmissionFor(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, lp, _ := net.SplitHostPort(ln.Addr().String())
	a := admissionFor(Config{Addr: ":5401", SchedulerAddr: "http://sched:5496/", Listener: ln,
		Admission: &Admission{Policy: workload.Policy{ReservedPorts: []int{22, 5401}}}})
	want := fmt.Sprintf("[22 5401 5496 %s]", lp)
	if got := fmt.Sprint(a.Policy.ReservedPorts); got != want {
		t.Errorf("reserved ports = %s, want %s", got, want)
	}
	if d := DefaultAdmission(); d.MaxInstances != DefaultMaxInstances || d.MaxPending != service.DefaultMaxPending || d.Policy.DefaultCPU != 100 {
		t.Errorf("DefaultAdmission() = %+v", d)
	}
}
