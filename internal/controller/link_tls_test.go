package controller

import (
	"context"
	"crypto/tls"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/internal/pki"
	"github.com/rik-org/rik/internal/scheduler"
	"github.com/rik-org/rik/internal/scheduler/schedtest"
	"github.com/rik-org/rik/internal/store/bolt"
	"github.com/rik-org/rik/internal/workload"
)

// The link dials a scheduler serving TLS with the controller's
// certificate: orders go through and statuses come back. Without a
// certificate it never subscribes.
func TestLinkOverMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.Init(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	_, controllers := schedtest.Start(t, scheduler.Config{CADir: dir, Logger: testLogger(t)})
	cert, key, err := ca.Issue(pki.Template{Role: pki.RoleController, Name: "ctrl"})
	if err != nil {
		t.Fatal(err)
	}
	withCert, err := pki.ClientTLS(pki.Pair{CertPEM: cert, KeyPEM: key}, ca.CertPEM, "")
	if err != nil {
		t.Fatal(err)
	}
	anonymous, _ := pki.ClientTLS(pki.Pair{}, ca.CertPEM, "")
	start := func(tlsCfg *tls.Config) *env {
		st, err := bolt.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		s, err := NewServer(Config{Store: st, SchedulerAddr: controllers, Logger: testLogger(t), SchedulerTLS: tlsCfg, Insecure: true})
		if err != nil {
			t.Fatal(err)
		}
		sctx, scancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		s.startBackground(sctx, &wg)
		hs := httptest.NewServer(s.Handler())
		t.Cleanup(func() {
			hs.Close()
			scancel()
			wg.Wait()
			s.link.close()
		})
		return &env{t: t, s: s, st: st, http: hs}
	}
	e := start(withCert)
	eventually(t, "subscribed over TLS", e.s.link.connected.Load)
	eventually(t, "lease taken", e.s.lease.held.Load)
	wlRec := e.createWorkload(podDef("web"))
	in := e.createInstances(map[string]any{"workload_id": wlRec.ID})[0]
	// No node: the scheduler answers PENDING with its reason.
	e.waitInstance(in.ID, "scheduler's reason", func(i workload.Instance) bool {
		return i.Status == workload.StatusPending && strings.Contains(i.Reason, "no node")
	})

	anon := start(anonymous)
	err = anon.s.link.schedule(t.Context(), &controllerpb.WorkloadScheduling{InstanceId: "x", Action: commonpb.WorkloadRequestKind_DESTROY})
	if err == nil {
		t.Fatal("a controller without certificate sent an order")
	}
	if anon.s.link.connected.Load() {
		t.Fatal("a controller without certificate subscribed")
	}
}

// An order larger than the scheduler takes fails its instance instead of
// being retried forever.
func TestOrderTooLargeFailsInstance(t *testing.T) {
	e := newEnv(t)
	wl := e.createWorkload(podDef("web"))
	e.sched.mu.Lock()
	e.sched.reject = status.Error(codes.ResourceExhausted, "grpc: received message larger than max")
	e.sched.mu.Unlock()
	in := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	got := e.waitInstance(in.ID, "failed", func(i workload.Instance) bool { return i.Status == workload.StatusFailed })
	if got.Reason != api.ReasonRejected || !strings.Contains(got.Message, "larger than max") {
		t.Errorf("instance %+v", got)
	}
}
