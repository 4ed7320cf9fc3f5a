// Package service is the controller's domain: workloads, instances,
// nodes, API tokens, admission and quotas, status ingestion and orphans,
// over records in the store. It knows nothing of HTTP or gRPC: the REST
// API calls its methods; it sends orders through a Scheduler, and the
// scheduler session hands it statuses (Ingest) and asks it to re-send the
// desired state (Subscribed). Its errors wrap the domain errors of
// internal/errdefs, which the edges map to status codes.
package service

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/workload"
)

// Scheduler is what the service asks of the scheduler (the link).
// Its errors wrap the domain errors: ErrUnavailable when it cannot be
// reached, ErrAlreadyExists for an order it already has, ErrInvalidArgument,
// ErrFailedPrecondition or ErrResourceExhausted for one it refuses.
type Scheduler interface {
	// Schedule sends one order.
	Schedule(ctx context.Context, o Order) error
	// Nodes lists the nodes the scheduler knows.
	Nodes(ctx context.Context) ([]api.Node, error)
	// Logs opens the log stream of an instance on its node.
	Logs(ctx context.Context, req LogRequest) (LogStream, error)
	// Connected reports whether the status stream is up.
	Connected() bool
	// Unknown returns, of the given instance ids, those the scheduler
	// does not have.
	Unknown(ctx context.Context, ids []string) ([]string, error)
}

// Leader says whether this controller holds the ingestion lease: only the
// holder ingests statuses, re-sends orders and syncs nodes.
type Leader interface{ Held() bool }

// Action is what an order asks of the scheduler.
type Action int

const (
	Create Action = iota + 1
	Destroy
)

// Order is a scheduling order for one instance.
type Order struct {
	Action       Action
	WorkloadID   string
	Definition   *workload.Workload // nil: none (an instance nobody owns)
	InstanceID   string
	InstanceName string
	Node         string   // where it is (DESTROY, re-sent CREATE) or "" (place it)
	FormerNodes  []string // where a copy may still run
}

// Status is one instance status reported by the scheduler.
type Status struct {
	InstanceID string
	WorkloadID string
	Status     workload.Status
	Node       string
	IP         string
	Ports      []workload.PortMapping
	Reason     string
	Message    string
	ExitCode   *int
	Restarts   int
	Timings    map[string]int64 // milliseconds by step
	Ready      bool             // RUNNING and its readiness probes pass
	At         Cursor           // its position in the status stream (zero: not numbered)
}

// Defaults of Config.
const (
	// DefaultResyncEvery is how often the lease holder re-sends the orders
	// still owed (deletes, instances the scheduler never took).
	DefaultResyncEvery = 30 * time.Second
	// DefaultNodesEvery is how often the lease holder asks the scheduler
	// for its nodes.
	DefaultNodesEvery = 5 * time.Second
	// DefaultNodesRefresh bounds how long a stored node may lag behind the
	// heartbeats when nothing else changed.
	DefaultNodesRefresh = 30 * time.Second
)

// Config configures a Service.
type Config struct {
	Store     store.Store // required
	Scheduler Scheduler   // required
	Leader    Leader      // required
	Admission Admission
	Logger    *slog.Logger          // nil: discarded
	Metrics   prometheus.Registerer // nil: not registered
	Now       func() time.Time      // nil: time.Now in UTC

	ResyncEvery  time.Duration // DefaultResyncEvery
	CursorEvery  time.Duration // DefaultCursorEvery
	NodesEvery   time.Duration // DefaultNodesEvery
	NodesRefresh time.Duration // DefaultNodesRefresh

	// The nodes' pod subnets (podsubnets.go): /NodeSubnetBits subnets of
	// ClusterCIDR; DefaultClusterCIDR, DefaultNodeSubnetBits.
	ClusterCIDR    netip.Prefix
	NodeSubnetBits int
}

// Service is the controller's domain.
type Service struct {
	cfg    Config
	log    *slog.Logger
	st     store.Store
	sched  Scheduler
	leader Leader
	now    func() time.Time
	// reconcileKick: a managed workload changed (ReconcileKicks).
	reconcileKick chan struct{}

	repo      *repo
	tokens    *tokenStore
	events    *feed
	orphans   orphans
	quota     quota
	metrics   *metrics
	nodesKick chan struct{} // sync the nodes now
	cursor    cursorState
	history   *history
}

// New builds a Service over cfg.Store. Nothing runs until Run.
func New(cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return time.Now().UTC() }
	}
	setDefault(&cfg.ResyncEvery, DefaultResyncEvery)
	setDefault(&cfg.CursorEvery, DefaultCursorEvery)
	setDefault(&cfg.NodesEvery, DefaultNodesEvery)
	setDefault(&cfg.NodesRefresh, DefaultNodesRefresh)
	if !cfg.ClusterCIDR.IsValid() {
		cfg.ClusterCIDR = DefaultClusterCIDR
	}
	if cfg.NodeSubnetBits == 0 {
		cfg.NodeSubnetBits = DefaultNodeSubnetBits
	}
	events := newFeed()
	return &Service{
		cfg: cfg, log: cfg.Logger, st: cfg.Store, sched: cfg.Scheduler, leader: cfg.Leader, now: cfg.Now,
		reconcileKick: make(chan struct{}, 1),

		repo:      newRepo(cfg.Store),
		tokens:    newTokenStore(cfg.Store, cfg.Now),
		events:    events,
		metrics:   newMetrics(cfg.Metrics, events),
		nodesKick: make(chan struct{}, 1),
		history:   newHistory(),
	}
}

func setDefault(v *time.Duration, def time.Duration) {
	if *v <= 0 {
		*v = def
	}
}

// Run runs the background work until ctx is done: following the instance
// records (events and metrics), the periodic resync, the node sync,
// saving the status stream position and writing the event history.
func (s *Service) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { s.watchRecords(ctx) })
	wg.Go(func() { s.resyncLoop(ctx) })
	wg.Go(func() { s.nodesLoop(ctx) })
	wg.Go(func() { s.cursorLoop(ctx) })
	wg.Go(func() { s.historyLoop(ctx) })
	wg.Wait()
}

// SchedulerConnected reports whether the scheduler's status stream is up.
func (s *Service) SchedulerConnected() bool { return s.sched.Connected() }

// Leader reports whether this controller holds the ingestion lease.
func (s *Service) Leader() bool { return s.leader.Held() }

// sleep waits d or until ctx is done; false if ctx is done.
func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
	return ctx.Err() == nil
}
