package reconcile

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Workload is a managed workload as the Cluster sees it at one moment.
type Workload struct {
	ID, Name  string
	Revision  int // the current one
	Policy    Policy
	State     State
	Instances []Instance
}

// Cluster is what the reconciler reads and changes (the controller's
// service over its store).
type Cluster interface {
	// Managed lists the managed workloads with their instances.
	Managed(ctx context.Context) ([]Workload, error)
	// Create creates n instances of w's current revision, unless w changed
	// revision since it was listed.
	Create(ctx context.Context, w Workload, n int) error
	// Delete deletes the instances of w with these ids.
	Delete(ctx context.Context, w Workload, ids []string) error
	// Record stores the state of w's rollout, unless w changed revision
	// since it was listed.
	Record(ctx context.Context, w Workload, s State) error
}

// Notifier hears of rollout progress: a rollout that changed phase or
// message. Events plug in here; nil: only logged.
type Notifier interface {
	Rollout(ctx context.Context, workload string, s State)
}

// Leader says whether this controller holds the lease: only the holder
// reconciles.
type Leader interface{ Held() bool }

// Defaults of Config.
const (
	// DefaultEvery is the period of a pass when nothing kicks one: time
	// alone moves minReadySeconds and progress deadlines.
	DefaultEvery = 2 * time.Second
	// DefaultMinGap is the least time between two passes (and at least
	// twice the last pass's time): a burst of changes makes one pass.
	DefaultMinGap = 200 * time.Millisecond
)

// Config configures a Reconciler.
type Config struct {
	Cluster  Cluster // required
	Leader   Leader  // required
	Notifier Notifier
	Logger   *slog.Logger
	Now      func() time.Time
	Every    time.Duration // DefaultEvery
	MinGap   time.Duration // DefaultMinGap
}

// Reconciler runs passes over the managed workloads.
type Reconciler struct {
	cfg  Config
	log  *slog.Logger
	kick chan struct{}
	mu   sync.Mutex // one pass at a time
}

// New builds a Reconciler; Run runs it.
func New(cfg Config) *Reconciler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return time.Now().UTC() }
	}
	if cfg.Every <= 0 {
		cfg.Every = DefaultEvery
	}
	if cfg.MinGap <= 0 {
		cfg.MinGap = DefaultMinGap
	}
	return &Reconciler{cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1)}
}

// Kick asks for a pass soon.
func (r *Reconciler) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run runs a pass every Every, or soon after a Kick, while this controller
// holds the lease, until ctx is done.
func (r *Reconciler) Run(ctx context.Context) {
	tick := time.NewTicker(r.cfg.Every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-r.kick:
		}
		start := time.Now()
		r.step(ctx)
		// Let a burst of changes gather; a costly pass (many instances)
		// waits twice its time, so passes take at most a third of a core.
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(r.cfg.MinGap, 2*time.Since(start))):
		}
	}
}

// step runs a pass if this controller holds the lease.
func (r *Reconciler) step(ctx context.Context) {
	if !r.cfg.Leader.Held() {
		return
	}
	if err := r.Pass(ctx); err != nil && ctx.Err() == nil {
		r.log.Warn("reconciling managed workloads", "err", err)
	}
}

// Pass reconciles every managed workload once. One failing workload does
// not stop the others; their errors are joined.
func (r *Reconciler) Pass(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	wls, err := r.cfg.Cluster.Managed(ctx)
	if err != nil {
		return err
	}
	now := r.cfg.Now()
	var errs []error
	for _, w := range wls {
		if err := r.reconcile(ctx, w, now); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// reconcile plans one workload and carries the plan out.
func (r *Reconciler) reconcile(ctx context.Context, w Workload, now time.Time) error {
	p := Decide(Input{Policy: w.Policy, Instances: w.Instances, State: w.State, Now: now})
	var errs []error
	if len(p.Delete) > 0 {
		r.log.Info("removing instances", "workload", w.Name, "revision", w.Revision, "count", len(p.Delete))
		errs = append(errs, r.cfg.Cluster.Delete(ctx, w, p.Delete))
	}
	if p.Create > 0 {
		r.log.Info("creating instances", "workload", w.Name, "revision", w.Revision, "count", p.Create)
		errs = append(errs, r.cfg.Cluster.Create(ctx, w, p.Create))
	}
	if p.State != w.State {
		if p.State.Phase != w.State.Phase || p.State.Message != w.State.Message {
			r.log.Info("rollout", "workload", w.Name, "revision", w.Revision, "phase", p.State.Phase, "message", p.State.Message)
			if r.cfg.Notifier != nil {
				r.cfg.Notifier.Rollout(ctx, w.Name, p.State)
			}
		}
		errs = append(errs, r.cfg.Cluster.Record(ctx, w, p.State))
	}
	return errors.Join(errs...)
}
