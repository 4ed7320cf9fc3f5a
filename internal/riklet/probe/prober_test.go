package probe

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/riklet/clock/clocktest"
	"github.com/rik-org/rik/internal/workload"
)

// waitArmed waits until the prober waits for its next check.
func waitArmed(t *testing.T, c *clocktest.Fake) {
	t.Helper()
	select {
	case <-c.Armed():
	case <-time.After(10 * time.Second):
		t.Fatal("the prober never waited for its next check")
	}
}

// sink records what the prober finds.
type sink struct{ events chan string }

func newSink() *sink { return &sink{events: make(chan string, 100)} }

func (s *sink) ProbeReady(id string, gen int, ready bool) {
	if ready {
		s.events <- id + " ready"
	} else {
		s.events <- id + " unready"
	}
}

func (s *sink) ProbeFailed(id string, gen int, detail string) {
	s.events <- id + " failed: " + detail
}

func (s *sink) next(t *testing.T) string {
	t.Helper()
	select {
	case e := <-s.events:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no finding")
		return ""
	}
}

func (s *sink) none(t *testing.T) {
	t.Helper()
	select {
	case e := <-s.events:
		t.Fatalf("unexpected finding %q", e)
	default:
	}
}

// app is an http server whose health the test sets, counting checks.
type app struct {
	status atomic.Int32
	hits   atomic.Int32
	host   string
	port   int
}

func newApp(t *testing.T) *app {
	a := &app{}
	a.status.Store(200)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.hits.Add(1)
		w.WriteHeader(int(a.status.Load()))
	}))
	t.Cleanup(srv.Close)
	a.host, a.port = hostPort(t, srv.Listener.Addr())
	return a
}

func TestProberReadiness(t *testing.T) {
	a := newApp(t)
	clock, s := clocktest.New(), newSink()
	p := New(clock, nil, s)
	defer p.Close()
	p.Watch(Target{ID: "i1", Gen: 1, Host: a.host, Probes: []Probe{{Kind: Readiness, Spec: workload.Probe{
		HTTP: &workload.HTTPProbe{Port: a.port, Path: "/ready"}, IntervalSeconds: 5, FailureThreshold: 2}}}})

	// No initial delay: checked at once, ready.
	if e := s.next(t); e != "i1 ready" {
		t.Fatalf("first finding %q", e)
	}
	waitArmed(t, clock)
	a.status.Store(500)
	clock.Advance(5 * time.Second) // one failure: still ready
	waitArmed(t, clock)
	s.none(t)
	clock.Advance(5 * time.Second) // two in a row: unready
	if e := s.next(t); e != "i1 unready" {
		t.Fatalf("finding %q, want unready", e)
	}
	waitArmed(t, clock)
	a.status.Store(302)
	clock.Advance(4 * time.Second) // not due yet
	s.none(t)
	clock.Advance(time.Second)
	if e := s.next(t); e != "i1 ready" {
		t.Fatalf("finding %q, want ready again", e)
	}
	waitArmed(t, clock)
	if got := a.hits.Load(); got != 4 {
		t.Errorf("%d checks, want 4", got)
	}
	p.Stop("i1")
	if w := p.Watched(); len(w) != 0 {
		t.Errorf("still watching %v", w)
	}
}

func TestProberLiveness(t *testing.T) {
	l := acceptor(t)
	host, port := hostPort(t, l.Addr())
	clock, s := clocktest.New(), newSink()
	p := New(clock, nil, s)
	defer p.Close()
	p.Watch(Target{ID: "i2", Gen: 7, Host: host, Probes: []Probe{{Kind: Liveness, Spec: workload.Probe{
		TCP: &workload.TCPProbe{Port: port}, InitialDelaySeconds: 30, FailureThreshold: 2}}}})
	waitArmed(t, clock) // waiting for the initial delay
	clock.Advance(30 * time.Second)
	waitArmed(t, clock) // passed, next in 10s (default)
	s.none(t)           // a liveness probe alone says nothing while it passes
	l.Close()
	clock.Advance(10 * time.Second)
	waitArmed(t, clock)
	s.none(t)
	clock.Advance(10 * time.Second)
	e := s.next(t)
	if !strings.HasPrefix(e, "i2 failed: tcp "+host) || !strings.Contains(e, "refused") || !strings.HasSuffix(e, "(2 times in a row)") {
		t.Fatalf("finding %q", e)
	}
	// It stops probing the instance by itself.
	p.Close()
	if w := p.Watched(); len(w) != 0 {
		t.Errorf("still watching %v", w)
	}
}

func TestProberWatchReplacesAndStop(t *testing.T) {
	a := newApp(t)
	clock, s := clocktest.New(), newSink()
	p := New(clock, nil, s)
	probes := []Probe{{Kind: Readiness, Spec: workload.Probe{HTTP: &workload.HTTPProbe{Port: a.port}}}}
	p.Watch(Target{ID: "i3", Gen: 1, Host: a.host, Probes: probes})
	if e := s.next(t); e != "i3 ready" {
		t.Fatalf("finding %q", e)
	}
	waitArmed(t, clock)
	// Watched again (a new address): the old watch ends, the new one
	// starts unready and checks at once.
	p.Watch(Target{ID: "i3", Gen: 2, Host: a.host, Probes: probes})
	if e := s.next(t); e != "i3 ready" {
		t.Fatalf("finding %q", e)
	}
	waitArmed(t, clock)
	if w := p.Watched(); !slices.Equal(w, []string{"i3"}) {
		t.Errorf("watching %v", w)
	}
	p.Watch(Target{ID: "none", Host: a.host}) // no probes: not watched
	p.Stop("i3")
	p.Stop("unknown")
	p.Close() // returns: every goroutine ended
	if w := p.Watched(); len(w) != 0 {
		t.Errorf("still watching %v", w)
	}
	p.Watch(Target{ID: "late", Host: a.host, Probes: probes}) // after Close: ignored
	if w := p.Watched(); len(w) != 0 {
		t.Errorf("watching after Close: %v", w)
	}
	clock.Advance(time.Hour)
	s.none(t)
}
