// Package controller is rik's controller: the REST API users talk to, the
// desired state in the store, and the link to the scheduler that places
// instances and reports their statuses.
package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/rik-org/rik/internal/store"
)

// Config configures a controller.
type Config struct {
	Addr          string       // listen address, ":5000" by default
	Listener      net.Listener // optional; used instead of Addr (tests)
	Store         store.Store  // required
	SchedulerAddr string       // "localhost:4996"; "http://host:port" accepted
	MaxBodyBytes  int64        // request body cap, 1 MiB by default
	Logger        *slog.Logger // nil: logs are discarded
	Admission     *Admission   // nil: DefaultAdmission() (admission.go)

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
	ReadHeaderTimeout time.Duration // DefaultReadHeaderTimeout
	ReadTimeout       time.Duration // one request's headers and body, DefaultReadTimeout
	IdleTimeout       time.Duration // DefaultIdleTimeout
	WriteTimeout      time.Duration // one answer, or each write of a stream, DefaultWriteTimeout
	MaxHeaderBytes    int           // DefaultMaxHeaderBytes
	MaxConnsPerIP     int           // DefaultMaxConnsPerIP; < 0: no cap

	// SchedulerTLS dials the scheduler over TLS, presenting the
	// controller's certificate; nil: plaintext.
	SchedulerTLS *tls.Config
}

// Defaults.
const (
	DefaultAddr          = ":5000"
	DefaultSchedulerAddr = "localhost:4996"
	DefaultMaxBodyBytes  = 1 << 20
)

// Server is a controller: HTTP API plus scheduler link.
type Server struct {
	cfg     Config
	log     *slog.Logger
	repo    *repo
	link    *link
	events  *broker
	lease   *lease
	metrics *metrics
	handler http.Handler
	// patterns are the routes registered, in order (see routeRoles).
	patterns []string
	tokens   *tokenStore
	orphans  orphans // DESTROY sent for instances the store does not know

	admission Admission // what is admitted (admission.go)
	quota     quota
	// watches counts instance watches established (listed and following):
	// changes made after it grows are published to event subscribers.
	watches atomic.Int64

	resyncEvery    time.Duration
	keepaliveEvery time.Duration
	callTimeout    time.Duration
	now            func() time.Time

	nodesEvery   time.Duration // node sync period
	nodesRefresh time.Duration // longest heartbeat lag of a stored node
	nodesKick    chan struct{} // sync the nodes now

	bgOnce sync.Once
	// streams is cancelled when the HTTP server shuts down, ending
	// long-lived responses (events, followed logs).
	streams    context.Context
	endStreams context.CancelFunc
}

// NewServer checks cfg, applies defaults and builds a Server. Nothing runs
// until Run (or, in tests, Handler plus the background loops).
func NewServer(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("controller config: store is required")
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.SchedulerAddr == "" {
		cfg.SchedulerAddr = DefaultSchedulerAddr
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Insecure && cfg.TLS != nil {
		return nil, errors.New("controller config: insecure and TLS both set")
	}
	if !cfg.Insecure && cfg.AdminTokenFile == "" {
		return nil, errors.New("controller config: an admin token file is required (or insecure mode)")
	}
	setDefault(&cfg.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	setDefault(&cfg.ReadTimeout, DefaultReadTimeout)
	setDefault(&cfg.IdleTimeout, DefaultIdleTimeout)
	setDefault(&cfg.WriteTimeout, DefaultWriteTimeout)
	setDefault(&cfg.MaxHeaderBytes, DefaultMaxHeaderBytes)
	setDefault(&cfg.MaxConnsPerIP, DefaultMaxConnsPerIP)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:            cfg,
		log:            cfg.Logger,
		repo:           newRepo(cfg.Store),
		events:         newBroker(),
		metrics:        newMetrics(),
		resyncEvery:    30 * time.Second,
		keepaliveEvery: 15 * time.Second,
		callTimeout:    3 * time.Second,
		now:            func() time.Time { return time.Now().UTC() },
		nodesEvery:     DefaultNodesEvery,
		nodesRefresh:   DefaultNodesRefresh,
		nodesKick:      make(chan struct{}, 1),
		admission:      admissionFor(cfg),
	}
	s.tokens = newTokenStore(cfg.Store, func() time.Time { return s.now() })
	s.streams, s.endStreams = context.WithCancel(context.Background())
	s.lease = &lease{st: cfg.Store, id: controllerID(cfg), renew: 5 * time.Second, ttl: 15 * time.Second,
		log: s.log, gained: s.leaseGained}
	l, err := newLink(s, schedulerTarget(cfg.SchedulerAddr))
	if err != nil {
		return nil, err
	}
	s.link = l
	s.handler = s.routes()
	return s, nil
}

// setDefault sets *v to def when it is 0.
func setDefault[T int | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
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

// leaseGained catches up on statuses when this controller starts ingesting:
// it subscribes again, and the scheduler replays the last status of every
// instance (destroying those nobody owns) and answers the re-sent orders.
func (s *Server) leaseGained(context.Context) {
	s.link.resubscribe()
}

// schedulerTarget turns "http://host:port/" into "host:port".
func schedulerTarget(addr string) string {
	for _, p := range []string{"http://", "https://", "grpc://"} {
		addr = strings.TrimPrefix(addr, p)
	}
	return strings.TrimSuffix(addr, "/")
}

// Handler returns the HTTP handler of the REST API.
func (s *Server) Handler() http.Handler { return s.handler }

// Run starts the controller and blocks until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	s, err := NewServer(cfg)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

// Run serves HTTP(S) and keeps the scheduler link until ctx is done, then
// shuts down gracefully. Before serving it creates the first admin token
// if there is none.
func (s *Server) Run(ctx context.Context) error {
	if err := s.bootstrapAdmin(ctx); err != nil {
		s.link.close()
		return err
	}
	ln := s.cfg.Listener
	if ln == nil {
		var err error
		ln, err = net.Listen("tcp", s.cfg.Addr)
		if err != nil {
			s.link.close()
			return fmt.Errorf("listening on %s: %w", s.cfg.Addr, err)
		}
	}
	if s.cfg.MaxConnsPerIP > 0 {
		ln = newPerIPListener(ln, s.cfg.MaxConnsPerIP, s.metrics.connRefused.Inc)
	}
	// Background loops outlive the HTTP server by the shutdown, so requests
	// in flight can still send their orders.
	bgCtx, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackground()
	var wg sync.WaitGroup
	s.startBackground(bgCtx, &wg)

	srv := s.httpServer()
	srv.RegisterOnShutdown(s.endStreams)
	errc := make(chan error, 1)
	scheme := "http"
	if srv.TLSConfig != nil {
		scheme = "https"
		go func() { errc <- srv.ServeTLS(ln, "", "") }()
	} else {
		go func() { errc <- srv.Serve(ln) }()
	}
	s.log.Info("controller listening", "addr", ln.Addr().String(), "scheme", scheme, "tokens", !s.cfg.Insecure, "scheduler", s.link.target)

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("serving http: %w", err)
	}
	shutCtx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	if serr := srv.Shutdown(shutCtx); serr != nil {
		s.log.Warn("http shutdown", "err", serr)
	}
	stopBackground()
	wg.Wait()
	s.link.close()
	s.log.Info("controller stopped")
	return err
}

// bootstrapAdmin creates the first admin token (unless insecure).
func (s *Server) bootstrapAdmin(ctx context.Context) error {
	if s.cfg.Insecure {
		return nil
	}
	created, err := s.tokens.bootstrapAdmin(ctx, s.cfg.AdminTokenFile)
	if err != nil {
		return fmt.Errorf("creating the first admin token: %w", err)
	}
	if created {
		s.log.Info("first admin token created", "file", s.cfg.AdminTokenFile)
	}
	return nil
}

// streamContext is r's context, also cancelled when the server shuts down.
func (s *Server) streamContext(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(s.streams, cancel)
	return ctx, func() { stop(); cancel() }
}

// startBackground starts the lease, the scheduler link, the store watch
// feeding events and metrics, the periodic resync and the node sync; they
// stop with ctx.
func (s *Server) startBackground(ctx context.Context, wg *sync.WaitGroup) {
	s.bgOnce.Do(func() {
		wg.Add(5)
		go func() { defer wg.Done(); s.lease.run(ctx) }()
		go func() { defer wg.Done(); s.link.run(ctx) }()
		go func() { defer wg.Done(); s.watchInstances(ctx) }()
		go func() { defer wg.Done(); s.resyncLoop(ctx) }()
		go func() { defer wg.Done(); s.nodesLoop(ctx) }()
	})
}

// sleep waits d or until ctx is done; false if ctx is done.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
