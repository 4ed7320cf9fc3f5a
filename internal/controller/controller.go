// Package controller is rik's controller: the REST API users talk to, the
// desired state in the store, and the link to the scheduler that places
// instances and reports their statuses. This package only wires its rooms
// together:
//
//	service/  the domain: workloads, instances, nodes, tokens, admission,
//	          status ingestion, over records in the store
//	httpapi/  the REST API: routes, authorization, the HTTP error mapping
//	link/     the scheduler session (statuses in, orders out)
//	lease/    which of the controllers sharing a store ingests
//	reconcile/ keeps managed workloads (workloads.apply): replicas, rollouts
package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/controller/httpapi"
	"github.com/rik-org/rik/internal/controller/lease"
	"github.com/rik-org/rik/internal/controller/link"
	"github.com/rik-org/rik/internal/controller/reconcile"
	"github.com/rik-org/rik/internal/controller/service"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/version"
)

// Config configures a controller.
type Config struct {
	Addr          string       // listen address, ":5000" by default
	Listener      net.Listener // optional; used instead of Addr (tests)
	Store         store.Store  // required
	SchedulerAddr string       // "localhost:4996"; "http://host:port" accepted
	MaxBodyBytes  int64        // request body cap, httpapi.DefaultMaxBodyBytes
	Logger        *slog.Logger // nil: logs are discarded
	Admission     *Admission   // nil: DefaultAdmission()

	// TLS serves the API over HTTPS with this configuration (its
	// certificate set); nil serves plain HTTP.
	TLS *tls.Config
	// Insecure turns authentication off: no tokens, every caller is
	// admin (RIK's own clients send none). TLS must then be nil.
	// Admission still applies.
	Insecure bool
	// AdminTokenFile receives the first admin token, mode 0600, when the
	// controller starts and no usable admin token exists. Required unless
	// Insecure.
	AdminTokenFile string

	// Limits on what one client can hold; 0 takes the default.
	Limits

	// SchedulerTLS dials the scheduler over TLS, presenting the
	// controller's certificate; nil: plaintext.
	SchedulerTLS *tls.Config

	// ClusterCIDR is where the nodes' pod subnets (/24 each) are taken
	// from; zero: service.DefaultClusterCIDR (10.63.0.0/16).
	ClusterCIDR netip.Prefix
}

// Defaults (the HTTP server's limits are httpapi's).
const (
	DefaultAddr          = ":5000"
	DefaultSchedulerAddr = "localhost:4996"
	DefaultReadTimeout   = httpapi.DefaultReadTimeout
	DefaultMaxConnsPerIP = httpapi.DefaultMaxConnsPerIP
	DefaultMaxInstances  = service.DefaultMaxInstances
)

// Limits are what one client can hold of the HTTP server.
type Limits = httpapi.Limits

// Admission is what the controller admits besides a valid definition: the
// workload policy and the instance quotas.
type Admission = service.Admission

// DefaultAdmission is the admission of a controller configured with
// nothing.
func DefaultAdmission() Admission { return service.DefaultAdmission() }

// BootstrapAdminToken creates the first admin token in st when no usable
// one exists, writing it to file (mode 0600), as a controller does when
// it starts; it reports whether it created one. `rik dev` calls it first,
// to print the token.
func BootstrapAdminToken(ctx context.Context, st store.Store, file string) (bool, error) {
	return service.BootstrapAdminToken(ctx, st, file)
}

// Server is a controller: its rooms, wired.
type Server struct {
	cfg   Config
	log   *slog.Logger
	svc   *service.Service
	link  *link.Link
	lease *lease.Lease
	api   *httpapi.API
	rec   *reconcile.Reconciler
}

// NewServer checks cfg, applies defaults and builds a Server. Nothing runs
// until Run.
func NewServer(cfg Config) (*Server, error) { return newServer(cfg, tuning{}) }

// tuning is what tests change: periods and the clock (0 and nil: the
// defaults).
type tuning struct {
	resyncEvery, nodesEvery, keepaliveEvery time.Duration
	leaseRenew, leaseTTL                    time.Duration
	now                                     func() time.Time
}

func newServer(cfg Config, t tuning) (*Server, error) {
	if err := checkConfig(&cfg); err != nil {
		return nil, err
	}
	l, err := link.New(link.Config{Target: schedulerTarget(cfg.SchedulerAddr), TLS: cfg.SchedulerTLS, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, link: l}
	s.lease = lease.New(lease.Config{Store: cfg.Store, ID: controllerID(cfg), Logger: cfg.Logger,
		Renew: t.leaseRenew, TTL: t.leaseTTL,
		// Catch up on statuses as the holder: subscribe again, resuming
		// after the last status the holders stored; the scheduler replays
		// what changed since (destroying instances nobody owns) and
		// answers the re-sent orders.
		Gained: func(context.Context) { l.Resubscribe() }})
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), version.BuildInfo(),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rik_controller_scheduler_connected",
			Help: "1 while the controller is subscribed to the scheduler.",
		}, func() float64 {
			if l.Connected() {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "rik_controller_scheduler_subscribes_total",
			Help: "Status streams the scheduler accepted: constant while the controller stays subscribed.",
		}, func() float64 { return float64(l.Subscribes()) }))
	s.svc = service.New(service.Config{Store: cfg.Store, Scheduler: l, Leader: s.lease,
		Admission: admissionFor(cfg), Logger: cfg.Logger, Metrics: reg,
		Now: t.now, ResyncEvery: t.resyncEvery, NodesEvery: t.nodesEvery, ClusterCIDR: cfg.ClusterCIDR})
	s.api = httpapi.New(httpapi.Config{Service: s.svc, Logger: cfg.Logger, Metrics: reg,
		Insecure: cfg.Insecure, MaxBodyBytes: cfg.MaxBodyBytes, TLS: cfg.TLS, KeepaliveEvery: t.keepaliveEvery,
		Limits: cfg.Limits})
	// Keeps managed workloads; rollout progress goes to the workload's
	// event history.
	s.rec = reconcile.New(reconcile.Config{Cluster: s.svc.Cluster(), Leader: s.lease, Logger: cfg.Logger, Now: t.now,
		Notifier: rolloutEvents{s.svc}})
	return s, nil
}

// checkConfig checks cfg and fills in its defaults.
func checkConfig(cfg *Config) error {
	if cfg.Store == nil {
		return errors.New("controller config: store is required")
	}
	if cfg.Insecure && cfg.TLS != nil {
		return errors.New("controller config: insecure and TLS both set")
	}
	if !cfg.Insecure && cfg.AdminTokenFile == "" {
		return errors.New("controller config: an admin token file is required (or insecure mode)")
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.SchedulerAddr == "" {
		cfg.SchedulerAddr = DefaultSchedulerAddr
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// controllerID names this controller in the lease (for humans: host and
// listen address, plus a random part as it must be unique).
func controllerID(cfg Config) string {
	host, _ := os.Hostname()
	addr := cfg.Addr
	if cfg.Listener != nil {
		addr = cfg.Listener.Addr().String()
	}
	return host + "/" + addr + "/" + uuid.NewString()[:8]
}

// schedulerTarget turns "http://host:port/" into "host:port".
func schedulerTarget(addr string) string {
	for _, p := range []string{"http://", "https://", "grpc://"} {
		addr = strings.TrimPrefix(addr, p)
	}
	return strings.TrimSuffix(addr, "/")
}

// admissionFor returns cfg's admission (the default if unset) with the
// ports this controller and its scheduler listen on reserved.
func admissionFor(cfg Config) Admission {
	a := DefaultAdmission()
	if cfg.Admission != nil {
		a = *cfg.Admission
	}
	addrs := []string{cfg.Addr, schedulerTarget(cfg.SchedulerAddr)}
	if cfg.Listener != nil {
		addrs = append(addrs, cfg.Listener.Addr().String())
	}
	a.Policy.ReservedPorts = slices.Clone(a.Policy.ReservedPorts)
	for _, addr := range addrs {
		if _, p, err := net.SplitHostPort(addr); err == nil {
			if n, err := strconv.Atoi(p); err == nil && n > 0 && !slices.Contains(a.Policy.ReservedPorts, n) {
				a.Policy.ReservedPorts = append(a.Policy.ReservedPorts, n)
			}
		}
	}
	return a
}

// Run starts the controller and blocks until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	s, err := NewServer(cfg)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

// Run creates the first admin token if there is none, then serves the API
// and runs the lease, the scheduler link and the service's background work
// until ctx is done; it then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	defer s.link.Close()
	if err := s.bootstrapAdmin(ctx); err != nil {
		return err
	}
	ln := s.cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.cfg.Addr); err != nil {
			return fmt.Errorf("listening on %s: %w", s.cfg.Addr, err)
		}
	}
	// The background work outlives the HTTP server by its shutdown, so
	// requests in flight can still send their orders.
	bgCtx, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackground()
	var wg sync.WaitGroup
	s.start(bgCtx, &wg)
	s.log.Info("controller starting", "scheduler", s.link.Target())
	err := s.api.Serve(ctx, ln)
	stopBackground()
	wg.Wait()
	s.log.Info("controller stopped")
	return err
}

// bootstrapAdmin creates the first admin token (unless insecure).
func (s *Server) bootstrapAdmin(ctx context.Context) error {
	if s.cfg.Insecure {
		return nil
	}
	created, err := s.svc.BootstrapAdmin(ctx, s.cfg.AdminTokenFile)
	if err != nil {
		return fmt.Errorf("creating the first admin token: %w", err)
	}
	if created {
		s.log.Info("first admin token created", "file", s.cfg.AdminTokenFile)
	}
	return nil
}

// start runs the lease, the scheduler link and the service's background
// work until ctx is done.
func (s *Server) start(ctx context.Context, wg *sync.WaitGroup) {
	wg.Go(func() { s.lease.Run(ctx) })
	wg.Go(func() { s.link.Run(ctx, s.svc) })
	wg.Go(func() { s.svc.Run(ctx) })
	wg.Go(func() { s.rec.Run(ctx) })
	wg.Go(func() { s.svc.FollowChanges(ctx, s.rec.Kick) })
}

// rolloutEvents records a rollout's changes of phase in its workload's
// event history.
type rolloutEvents struct{ svc *service.Service }

func (r rolloutEvents) Rollout(ctx context.Context, workload string, st reconcile.State) {
	msg := fmt.Sprintf("revision %d: %s", st.Revision, st.Phase)
	if st.Message != "" {
		msg += ": " + st.Message
	}
	reason := st.Reason
	if reason == "" {
		reason = "Rollout" + st.Phase
	}
	r.svc.Record(ctx, api.EventKindWorkload, workload, reason, msg)
}
