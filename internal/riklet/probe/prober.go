package probe

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/rik-org/rik/internal/riklet/clock"
)

// Sink receives what the probes find. gen is the Target's, so a finding
// about an earlier run of the instance can be told apart. Its methods
// must not block for long.
type Sink interface {
	// ProbeReady says the instance's readiness changed: every readiness
	// probe passes (ready), or one failed FailureThreshold times in a row.
	ProbeReady(id string, gen int, ready bool)
	// ProbeFailed says a liveness probe failed FailureThreshold times in
	// a row (detail says which and why). The instance is no longer probed.
	ProbeFailed(id string, gen int, detail string)
}

// Target is one running instance to probe.
type Target struct {
	ID     string
	Gen    int    // the caller's number for this run of the instance
	Host   string // the address checks reach: the pod's IP, the Function guest's
	Probes []Probe
	Exec   Execer // nil: exec checks fail (Functions)
}

// Prober probes the instances it is told to watch, one goroutine each.
type Prober struct {
	clock   clock.Clock
	log     *slog.Logger
	sink    Sink
	checker *checker
	ctx     context.Context // ends at Close
	cancel  context.CancelFunc

	mu      sync.Mutex
	watches map[string]*watch
	wg      sync.WaitGroup
}

type watch struct{ cancel context.CancelFunc }

// New returns a prober reporting to sink; clk nil is the machine's
// clock, log nil discards.
func New(clk clock.Clock, log *slog.Logger, sink Sink) *Prober {
	if clk == nil {
		clk = clock.Real{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Prober{clock: clk, log: log, sink: sink, checker: newChecker(), ctx: ctx, cancel: cancel, watches: map[string]*watch{}}
}

// Watch starts probing t, replacing what probed t.ID before. A target
// without probes is not watched.
func (p *Prober) Watch(t Target) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w := p.watches[t.ID]; w != nil {
		w.cancel()
		delete(p.watches, t.ID)
	}
	if len(t.Probes) == 0 || p.ctx.Err() != nil {
		return
	}
	ctx, cancel := context.WithCancel(p.ctx)
	w := &watch{cancel: cancel}
	p.watches[t.ID] = w
	p.wg.Go(func() {
		p.run(ctx, t)
		p.mu.Lock()
		if p.watches[t.ID] == w {
			delete(p.watches, t.ID)
		}
		p.mu.Unlock()
		cancel()
	})
}

// Stop stops probing id (a check in progress is cancelled).
func (p *Prober) Stop(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w := p.watches[id]; w != nil {
		w.cancel()
		delete(p.watches, id)
	}
}

// Watched lists the instances being probed.
func (p *Prober) Watched() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.watches))
	for id := range p.watches {
		out = append(out, id)
	}
	return out
}

// Close stops every probe and waits for their goroutines.
func (p *Prober) Close() {
	p.cancel()
	p.wg.Wait()
}

// run probes t until ctx ends or a liveness probe fails. Readiness starts
// false when t has a readiness probe (the caller reports it so).
func (p *Prober) run(ctx context.Context, t Target) {
	n := len(t.Probes)
	sets, states, next := make([]Settings, n), make([]state, n), make([]time.Time, n)
	start := p.clock.Now()
	for i, pr := range t.Probes {
		sets[i] = SettingsOf(pr.Spec)
		states[i] = initialState(pr.Kind)
		next[i] = start.Add(sets[i].InitialDelay)
	}
	ready, hasReadiness := false, HasReadiness(t.Probes)
	for {
		if !p.sleepUntil(ctx, earliest(next)) {
			return
		}
		now := p.clock.Now()
		for i, pr := range t.Probes {
			if next[i].After(now) {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, sets[i].Timeout)
			err := p.checker.check(cctx, pr, t.Host, t.Exec)
			cancel()
			if ctx.Err() != nil {
				return
			}
			next[i] = now.Add(sets[i].Interval)
			was := states[i]
			states[i] = was.observe(err == nil, sets[i].FailureThreshold)
			if err != nil {
				p.log.Debug("probe check failed", "instance", t.ID, "probe", pr.Kind, "error", err)
			}
			if pr.Kind == Liveness && !states[i].ok {
				detail := failedDetail(pr, states[i].fails, err)
				p.log.Info("liveness probe failed", "instance", t.ID, "detail", detail)
				p.sink.ProbeFailed(t.ID, t.Gen, detail)
				return
			}
			if pr.Kind == Readiness && was.ok && !states[i].ok {
				p.log.Info("readiness probe failed", "instance", t.ID, "detail", failedDetail(pr, states[i].fails, err))
			}
		}
		if now := allPass(t.Probes, states); hasReadiness && now != ready {
			ready = now
			p.sink.ProbeReady(t.ID, t.Gen, ready)
		}
	}
}

// sleepUntil waits until at on the clock; false when ctx ended first.
func (p *Prober) sleepUntil(ctx context.Context, at time.Time) bool {
	d := at.Sub(p.clock.Now())
	if d <= 0 {
		return ctx.Err() == nil
	}
	due := make(chan struct{})
	t := p.clock.AfterFunc(d, func() { close(due) })
	select {
	case <-ctx.Done():
		t.Stop()
		return false
	case <-due:
		return true
	}
}

func earliest(ts []time.Time) time.Time {
	e := ts[0]
	for _, t := range ts[1:] {
		if t.Before(e) {
			e = t
		}
	}
	return e
}

// allPass reports whether every readiness probe passes.
func allPass(probes []Probe, states []state) bool {
	for i, p := range probes {
		if p.Kind == Readiness && !states[i].ok {
			return false
		}
	}
	return true
}
