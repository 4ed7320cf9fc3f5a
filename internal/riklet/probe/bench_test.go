package probe

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/workload"
)

// BenchmarkCheckHTTP is one http check of a server on 127.0.0.1 (a new
// connection each time, as the prober makes them).
func BenchmarkCheckHTTP(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	addr := srv.Listener.Addr().(*net.TCPAddr)
	p := Probe{Kind: Readiness, Spec: workload.Probe{HTTP: &workload.HTTPProbe{Port: addr.Port, Path: "/healthz"}}}
	c := newChecker()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.check(context.Background(), p, "127.0.0.1", nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckTCP is one tcp check of a listener on 127.0.0.1.
func BenchmarkCheckTCP(b *testing.B) {
	l := acceptor(b)
	p := Probe{Kind: Liveness, Spec: workload.Probe{TCP: &workload.TCPProbe{Port: l.Addr().(*net.TCPAddr).Port}}}
	c := newChecker()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.check(context.Background(), p, "127.0.0.1", nil); err != nil {
			b.Fatal(err)
		}
	}
}

type nopSink struct{}

func (nopSink) ProbeReady(string, int, bool)    {}
func (nopSink) ProbeFailed(string, int, string) {}

// BenchmarkWatchIdle measures what a watched instance costs between its
// checks: the memory of 1,000 instances whose probes wait (initial delay
// of an hour on the real clock), reported as bytes per instance.
func BenchmarkWatchIdle(b *testing.B) {
	const n = 1000
	probes := []Probe{
		{Kind: Readiness, Spec: workload.Probe{HTTP: &workload.HTTPProbe{Port: 80}, InitialDelaySeconds: 3600}},
		{Kind: Liveness, Spec: workload.Probe{TCP: &workload.TCPProbe{Port: 80}, InitialDelaySeconds: 3600}},
	}
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		p := New(nil, nil, nopSink{})
		for i := range n {
			p.Watch(Target{ID: fmt.Sprint("i", i), Host: "127.0.0.1", Probes: probes})
		}
		for len(p.Watched()) < n {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond) // every goroutine parked on its timer
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapInuse+after.StackInuse-before.HeapInuse-before.StackInuse)/n, "B/instance")
		p.Close()
	}
}
