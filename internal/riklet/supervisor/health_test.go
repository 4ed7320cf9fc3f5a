package supervisor

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/riklet/probe"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/riklet/runtime/runtimetest"
)

// fakeProber records what the supervisor asks probed; the tests report
// findings through the supervisor's probe.Sink methods themselves.
type fakeProber struct {
	mu      sync.Mutex
	watched map[string]probe.Target
	stops   []string
	closed  bool
}

func (p *fakeProber) Watch(t probe.Target) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.watched == nil {
		p.watched = map[string]probe.Target{}
	}
	p.watched[t.ID] = t
}

func (p *fakeProber) Stop(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.watched[id]; ok {
		p.stops = append(p.stops, id)
	}
	delete(p.watched, id)
}

func (p *fakeProber) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
}

// target is the watch of id; fails the test when id is not watched.
func (p *fakeProber) target(t *testing.T, id string) probe.Target {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	tg, ok := p.watched[id]
	if !ok {
		t.Fatalf("%s is not probed", id)
	}
	return tg
}

func (p *fakeProber) isWatched(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.watched[id]
	return ok
}

// probedPod is a pod whose container has the given healthcheck (JSON).
func probedPod(policy, healthcheck string) string {
	return fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","name":"web","restartPolicy":%q,
		"spec":{"containers":[{"name":"c","image":"alpine:3","ports":[{"targetPort":80}],"healthcheck":%s}]}}`, policy, healthcheck)
}

const (
	readinessCheck = `{"readiness":{"http":{"path":"/ready","port":80}}}`
	livenessCheck  = `{"liveness":{"tcp":{"port":80},"failureThreshold":2}}`
)

func TestReadinessReported(t *testing.T) {
	n := newNode(t, "", options{})
	n.create("plain", podDef("plain", "Always"))
	if m := n.last("plain"); m.GetStatus().String() != "RUNNING" || !m.GetReady() {
		t.Errorf("instance without readiness probe: %v, want RUNNING and ready", m)
	}
	if n.probe.isWatched("plain") {
		t.Error("an instance without probes is probed")
	}

	n.create("r", probedPod("Always", readinessCheck))
	if m := n.last("r"); m.GetStatus().String() != "RUNNING" || m.GetReady() {
		t.Fatalf("instance with readiness probe: %v, want RUNNING, not ready", m)
	}
	tg := n.probe.target(t, "r")
	if tg.Host != n.last("r").GetIp() || len(tg.Probes) != 1 || tg.Probes[0].Kind != probe.Readiness || tg.Probes[0].Container != "c" {
		t.Errorf("probed as %+v", tg)
	}
	before := len(n.statusesOf("r"))
	n.sup.ProbeReady("r", tg.Gen, true)
	n.settle()
	if m := n.last("r"); !m.GetReady() || m.GetStatus().String() != "RUNNING" {
		t.Errorf("after readiness passed: %v", m)
	}
	if e, _ := n.led.Get("r"); !e.Last.Ready {
		t.Error("ledger does not record readiness")
	}
	n.sup.ProbeReady("r", tg.Gen, true) // no change: nothing sent
	n.sup.ProbeReady("r", tg.Gen+1, false)
	n.settle()
	if got := len(n.statusesOf("r")); got != before+1 {
		t.Errorf("%d statuses sent, want %d: a repeated or stale finding was sent", got, before+1)
	}
	n.sup.ProbeReady("r", tg.Gen, false)
	n.settle()
	if m := n.last("r"); m.GetReady() {
		t.Errorf("after readiness failed: %v", m)
	}

	// An exit ends the probing, and an instance not running is never ready.
	n.exit("r", 1)
	if n.probe.isWatched("r") {
		t.Error("still probed after its exit")
	}
	n.sup.ProbeReady("r", tg.Gen, true)
	n.settle()
	if m := n.last("r"); m.GetReady() || m.GetReason() != api.ReasonBackOff {
		t.Errorf("after exit: %v", m)
	}
	n.advance(base) // restarted: probed again, in a new run, unready
	if tg2 := n.probe.target(t, "r"); tg2.Gen == tg.Gen {
		t.Errorf("restarted run probed with the old gen %d", tg.Gen)
	}
	if m := n.last("r"); m.GetStatus().String() != "RUNNING" || m.GetReady() {
		t.Errorf("after restart: %v", m)
	}
	n.destroy("r")
	if n.probe.isWatched("r") {
		t.Error("still probed after destroy")
	}
}

func TestLivenessFailureRestarts(t *testing.T) {
	n := newNode(t, "", options{})
	n.create("l", probedPod("Always", livenessCheck))
	tg := n.probe.target(t, "l")
	if m := n.last("l"); !m.GetReady() {
		t.Errorf("instance with only a liveness probe is not ready: %v", m)
	}
	n.sup.ProbeFailed("l", tg.Gen+1, "stale") // an earlier run's finding: ignored
	n.settle()
	if n.fake.Stops() != 0 {
		t.Fatal("stale liveness failure stopped the instance")
	}
	detail := "container c: tcp 10.99.0.2:80: connection refused (2 times in a row)"
	n.sup.ProbeFailed("l", tg.Gen, detail)
	n.settle()
	m := n.last("l")
	wantMsg := "liveness probe failed: " + detail + ", restarting in " + base.String()
	if m.GetStatus().String() != "CREATING" || m.GetReason() != api.ReasonLivenessProbeFailed || m.GetMessage() != wantMsg ||
		m.GetRestarts() != 1 || m.GetReady() {
		t.Errorf("after liveness failure: %v, want CREATING(%s) %q", m, api.ReasonLivenessProbeFailed, wantMsg)
	}
	if n.fake.Stops() != 1 || slices.Contains(n.fake.Running(), "l") {
		t.Errorf("stops %d, running %v: the broken instance was not stopped at once", n.fake.Stops(), n.fake.Running())
	}
	if n.probe.isWatched("l") {
		t.Error("still probed while restarting")
	}
	n.advance(base)
	if m := n.last("l"); m.GetStatus().String() != "RUNNING" || m.GetRestarts() != 1 {
		t.Errorf("after backoff: %v", m)
	}
	tg2 := n.probe.target(t, "l")
	// Failing again: counted and backed off as any restart.
	n.sup.ProbeFailed("l", tg2.Gen, detail)
	n.settle()
	if m := n.last("l"); m.GetRestarts() != 2 || !strings.HasSuffix(m.GetMessage(), "restarting in "+(2*base).String()) {
		t.Errorf("second failure: %v", m)
	}
	if n.fake.Starts() != 2 {
		t.Errorf("starts %d, want 2", n.fake.Starts())
	}
}

func TestLivenessFailureNever(t *testing.T) {
	n := newNode(t, "", options{})
	n.create("l", probedPod("Never", livenessCheck))
	tg := n.probe.target(t, "l")
	n.sup.ProbeFailed("l", tg.Gen, "tcp: refused")
	n.settle()
	n.wantNames("l", "CREATING", "RUNNING", "FAILED(LivenessProbeFailed)")
	if m := n.last("l"); m.GetMessage() != "liveness probe failed: tcp: refused" {
		t.Errorf("message %q", m.GetMessage())
	}
	n.advance(max)
	if n.fake.Starts() != 1 || len(n.fake.Running()) != 0 || len(n.clock.Pending()) != 0 {
		t.Errorf("starts %d, running %v, pending %v: want stopped for good", n.fake.Starts(), n.fake.Running(), n.clock.Pending())
	}
}

// execFake is the fake runtime with exec: it records what ran.
type execFake struct {
	*runtimetest.Fake
	mu  sync.Mutex
	ran []string
}

func (f *execFake) Exec(_ context.Context, id, container string, cmd []string) (int, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ran = append(f.ran, id+"/"+container+": "+strings.Join(cmd, " "))
	return 0, "", nil
}

func TestExecProbeRunsInTheRuntime(t *testing.T) {
	var ef *execFake
	n := newNode(t, "", options{wrap: func(_ *node, f *runtimetest.Fake) runtime.Runtime {
		ef = &execFake{Fake: f}
		return ef
	}})
	n.create("x", probedPod("Always", `{"liveness":{"exec":{"command":["cat","/tmp/ok"]}}}`))
	tg := n.probe.target(t, "x")
	if tg.Exec == nil {
		t.Fatal("pod probed without exec")
	}
	if code, _, err := tg.Exec(context.Background(), "c", []string{"cat", "/tmp/ok"}); code != 0 || err != nil {
		t.Fatalf("exec: %d %v", code, err)
	}
	if !slices.Equal(ef.ran, []string{"x/c: cat /tmp/ok"}) {
		t.Errorf("ran %v", ef.ran)
	}
}

func TestProbesAfterRecover(t *testing.T) {
	n := newNode(t, "", options{})
	n.create("r", probedPod("Always", readinessCheck))
	n.sup.ProbeReady("r", n.probe.target(t, "r").Gen, true)
	n.settle()
	n2 := n.restart(options{})
	// Adopted: probed again from the start, unready until it passes.
	tg := n2.probe.target(t, "r")
	if m := n2.last("r"); m.GetStatus().String() != "RUNNING" || m.GetReady() || tg.Host != m.GetIp() {
		t.Errorf("adopted: %v, probed at %q", m, tg.Host)
	}
	n2.sup.ProbeReady("r", tg.Gen, true)
	n2.settle()
	if m := n2.last("r"); !m.GetReady() {
		t.Errorf("adopted instance readiness not reported: %v", m)
	}
	if !n.probe.closed {
		t.Error("the prober of the closed supervisor was not closed")
	}
}

// A running instance whose address changes is probed at the new one.
func TestProbesFollowAddress(t *testing.T) {
	n := newNode(t, "", options{})
	n.create("a", probedPod("Always", readinessCheck))
	gen := n.probe.target(t, "a").Gen
	n.sup.Report(runtime.Status{InstanceID: "a", Phase: runtime.PhaseRunning, IP: "10.99.9.9"})
	n.settle()
	if tg := n.probe.target(t, "a"); tg.Host != "10.99.9.9" || tg.Gen != gen {
		t.Errorf("after the address changed, probed as %+v", tg)
	}
	if m := n.last("a"); m.GetIp() != "10.99.9.9" {
		t.Errorf("status %v", m)
	}
}
