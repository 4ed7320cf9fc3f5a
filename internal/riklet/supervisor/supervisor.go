// Package supervisor runs the node's instances through their lifecycle:
// it creates, starts, stops and destroys them with the runtime of their
// kind, applies their restart policy with backoff, and at riklet start
// adopts what still runs and settles what the ledger records. Operations
// of one instance run one after the other; those of different instances
// run concurrently. It knows nothing of the scheduler: orders come in as
// calls, statuses go out through the ledger.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/rik-org/rik/internal/riklet/ledger"
	"github.com/rik-org/rik/internal/riklet/probe"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/workload"
)

// Config of a supervisor. Zero durations take their defaults.
type Config struct {
	Ledger *ledger.Ledger
	Logger *slog.Logger
	Clock  Clock // nil: RealClock

	RestartBase  time.Duration // first restart delay (1s)
	RestartMax   time.Duration // longest restart delay (60s)
	RestartReset time.Duration // running this long resets the restart delay (10m)
	StartTimeout time.Duration // bound of one start, image pull included (10m)
	StopTimeout  time.Duration // bound of one stop (2m)
	Observer     Observer      // told of starts and restarts (metrics); nil: none

	// NewProber makes the prober of the running instances' health checks,
	// reporting to sink (nil: a probe.Prober on Clock).
	NewProber func(sink probe.Sink) Prober
}

// Observer is told of each start attempt (how long it took, the status
// and error it ended with) and each restart scheduled.
type Observer interface {
	Started(kind workload.Kind, took time.Duration, st runtime.Status, err error)
	Restarting(kind workload.Kind)
}

// noObserver is the Observer of a supervisor given none.
type noObserver struct{}

func (noObserver) Started(workload.Kind, time.Duration, runtime.Status, error) {}
func (noObserver) Restarting(workload.Kind)                                    {}

func (c Config) withDefaults() Config {
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&c.RestartBase, time.Second}, {&c.RestartMax, time.Minute}, {&c.RestartReset, 10 * time.Minute},
		{&c.StartTimeout, 10 * time.Minute}, {&c.StopTimeout, 2 * time.Minute},
	} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if c.Clock == nil {
		c.Clock = RealClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Observer == nil {
		c.Observer = noObserver{}
	}
	return c
}

// Supervisor runs the instances the node owns. Its life: New, SetRuntimes,
// Recover, then orders (Create, Destroy) and runtime reports (Report)
// until Close; StopAll after Close, for a node whose state does not
// outlive it.
type Supervisor struct {
	cfg    Config
	led    *ledger.Ledger
	log    *slog.Logger
	ctx    context.Context // ends at Close: starts and stops in progress are cancelled
	cancel context.CancelFunc
	queue  *serializer
	probes Prober

	mu       sync.Mutex // guards the fields below
	runtimes map[workload.Kind]runtime.Runtime
	kinds    []string
	runs     map[string]*run
	genSeq   int
}

// run is what the supervisor keeps in memory about an instance.
type run struct {
	step    int       // consecutive restarts (or destroy attempts), for the backoff
	started time.Time // last successful start
	gen     int       // identifies the restart scheduled last
	epoch   int       // counts starts; an exit seen during an older run is ignored

	cancelStart context.CancelFunc // cancels the Start in progress, if any
	aborted     bool               // a Destroy is queued: do not start, cancel a start

	// recovering: the entry is not settled yet after a riklet start; an
	// exit reported meanwhile is held and handled once it is.
	recovering bool
	held       *runtime.Status
}

// errAborted: a start was cancelled because the instance is being destroyed.
var errAborted = errors.New("start aborted: instance being destroyed")

// New returns a supervisor that lives until ctx is done or Close.
func New(ctx context.Context, cfg Config) *Supervisor {
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(ctx)
	s := &Supervisor{
		cfg:      cfg,
		led:      cfg.Ledger,
		log:      cfg.Logger,
		ctx:      ctx,
		cancel:   cancel,
		queue:    newSerializer(cfg.Clock),
		runtimes: map[workload.Kind]runtime.Runtime{},
		runs:     map[string]*run{},
	}
	if cfg.NewProber != nil {
		s.probes = cfg.NewProber(s)
	} else {
		s.probes = probe.New(cfg.Clock, cfg.Logger, s)
	}
	return s
}

// SetRuntimes gives the supervisor the node's runtimes, one per kind (a
// second one of a kind is ignored). It is called once, before Recover.
func (s *Supervisor) SetRuntimes(rts []runtime.Runtime) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rt := range rts {
		k := rt.Kind()
		if _, dup := s.runtimes[k]; dup {
			s.log.Warn("second runtime for a kind ignored", "kind", k)
			continue
		}
		s.runtimes[k] = rt
		s.kinds = append(s.kinds, string(k))
	}
	slices.Sort(s.kinds)
	if len(s.kinds) == 0 {
		s.log.Warn("no runtime available: this node cannot run anything")
	}
}

// Kinds lists the kinds this node runs, sorted.
func (s *Supervisor) Kinds() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.kinds)
}

// Close cancels what is in progress, drops the delayed restarts and
// retries, and waits for the operations queued already. What runs keeps
// running, for the next riklet to adopt.
func (s *Supervisor) Close() {
	s.cancel()
	s.probes.Close()
	s.queue.close()
}

// runtimeFor is the runtime of kind k, nil if the node has none.
func (s *Supervisor) runtimeFor(k workload.Kind) runtime.Runtime {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runtimes[kindOf(k)]
}

// runLocked returns the run of id, made if there is none; the caller
// holds s.mu.
func (s *Supervisor) runLocked(id string) *run {
	rs := s.runs[id]
	if rs == nil {
		rs = &run{}
		s.runs[id] = rs
	}
	return rs
}

// forgetRun drops what the supervisor keeps in memory about id.
func (s *Supervisor) forgetRun(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.runs, id)
}

// setStatus replaces the last status of id.
func (s *Supervisor) setStatus(id string, last ledger.LastStatus) {
	s.led.Update(id, func(e *ledger.Entry) { e.Last = last })
}

// Logs writes the logs of an owned instance to w.
func (s *Supervisor) Logs(ctx context.Context, id string, opts runtime.LogOptions, w io.Writer) error {
	e, ok := s.led.Get(id)
	if !ok {
		return runtime.ErrNotFound
	}
	rt := s.runtimeFor(e.Kind)
	if rt == nil {
		return errors.New(noRuntimeMessage(e.Kind))
	}
	inst, _ := instanceOf(e)
	return rt.Logs(ctx, inst, opts, w)
}

// StopAll stops every owned instance, concurrently, and forgets those
// stopped; those that could not be stopped stay in the ledger (they may
// still run) and are named in the error. It runs after Close.
func (s *Supervisor) StopAll() error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, e := range s.led.List() {
		wg.Go(func() {
			err := errors.New(noRuntimeMessage(kindOf(e.Kind)))
			if rt := s.runtimeFor(e.Kind); rt != nil {
				inst, _ := instanceOf(e)
				ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), s.cfg.StopTimeout)
				err = rt.Stop(ctx, inst)
				cancel()
			}
			if err != nil { // kept: it may still run
				mu.Lock()
				errs = append(errs, fmt.Errorf("stopping %s: %w", e.Name, err))
				mu.Unlock()
				return
			}
			s.led.Remove(e.InstanceID, stoppedOnExit)
		})
	}
	wg.Wait()
	if err := s.led.Sync(); err != nil {
		errs = append(errs, fmt.Errorf("saving ledger: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stopping instances on exit: %w", err)
	}
	s.log.Info("stopped every instance on exit")
	return nil
}

// instanceOf rebuilds the runtime instance of a ledger entry. A
// definition that no longer parses still gives an instance with its id,
// name and kind (enough to stop it), and an error.
func instanceOf(e ledger.Entry) (runtime.Instance, error) {
	inst := runtime.Instance{ID: e.InstanceID, Name: e.Name, WorkloadID: e.WorkloadID}
	w, err := workload.Parse(e.Definition)
	if err != nil {
		inst.Workload.Kind = kindOf(e.Kind)
		inst.Workload.Name = e.Name
		return inst, fmt.Errorf("parsing definition of %s: %w", e.Name, err)
	}
	inst.Workload = w
	return inst, nil
}

// kindOf normalises a kind read from the ledger.
func kindOf(k workload.Kind) workload.Kind {
	if n, err := workload.ParseKind(string(k)); err == nil {
		return n
	}
	return k
}

func noRuntimeMessage(k workload.Kind) string {
	return fmt.Sprintf("this node has no runtime for kind %q", k)
}
