// Package scheduler places workload instances on nodes and relays orders
// (controller → riklet) and statuses (riklet → controllers). Its state is in
// memory and rebuilt after a restart from what the riklets (re-registration)
// and the controllers (re-sent orders) tell it.
package scheduler

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/api/proto/workerpb"
	"github.com/rik-org/rik/internal/pki"
	"github.com/rik-org/rik/internal/scheduler/placement"
)

// Defaults.
const (
	DefaultWorkersAddr     = "0.0.0.0:4995"
	DefaultControllersAddr = "0.0.0.0:4996"
	DefaultNodeTimeout     = 15 * time.Second
	DefaultNodeGoneAfter   = 5 * time.Minute
)

// heartbeatFor is the longest heartbeat interval the scheduler allows its
// nodes: a third of the node timeout, so that a node is lost only after
// missing several heartbeats, never for one late by a jitter (issue 8).
// Riklets configured slower use it.
func heartbeatFor(nodeTimeout time.Duration) time.Duration { return nodeTimeout / 3 }

// minRecoveryWindow is the shortest default recovery window: riklets
// reconnect with a backoff of up to 5s (and may be restarting too); an
// instance placed elsewhere meanwhile moves for nothing.
const minRecoveryWindow = 10 * time.Second

// stopTimeout bounds the graceful stop of the gRPC servers.
const stopTimeout = 5 * time.Second

// Config configures Run.
type Config struct {
	WorkersAddr     string // riklets dial this; default 0.0.0.0:4995
	ControllersAddr string // controllers dial this; default 0.0.0.0:4996
	// Listeners used instead of the addresses when set (tests).
	WorkersListener     net.Listener
	ControllersListener net.Listener
	// NodeTimeout: a node not heard from for this long is lost; default 15s.
	NodeTimeout time.Duration
	// NodeGoneAfter: a node not heard from for this long is gone for good:
	// instances deleted while waiting for it to stop them are TERMINATED
	// (reason "node lost"); default 5m, at least NodeTimeout.
	NodeGoneAfter time.Duration
	// Strategy: "spread" (default) or "binpack".
	Strategy string
	// RecoveryWindow: after start, CREATE orders hinting at a node not yet
	// registered wait this long for it; default NodeTimeout, at least
	// minRecoveryWindow.
	RecoveryWindow time.Duration
	// MetricsAddr, when set, serves Prometheus metrics at /metrics there
	// (e.g. "127.0.0.1:4997"), and /healthz and /readyz; "" (default): no
	// HTTP endpoint. On loopback, or when Insecure, it is plain HTTP and
	// open; elsewhere HTTPS, /metrics only to controller certificates.
	MetricsAddr string
	// MetricsListener is used instead of MetricsAddr when set (tests).
	MetricsListener net.Listener
	Logger          *slog.Logger

	// CADir holds the cluster CA (ca.crt, ca.key: the scheduler signs node
	// certificates) and the join tokens. Both ports serve TLS with a
	// certificate the scheduler issues itself at start: controllers must
	// present a controller certificate, nodes a node certificate (except
	// to Join). Required unless Insecure.
	CADir string
	// TLSNames are more names (DNS names or IPs) the serving certificate
	// is valid for, besides the host name, localhost and the listening
	// addresses.
	TLSNames []string
	// NodeCertTTL is the lifetime of node certificates; default
	// pki.NodeLifetime (riklets renew them at two thirds of it).
	NodeCertTTL time.Duration
	// Insecure serves plaintext and checks nobody (RIK's own clients).
	Insecure bool
}

// Run serves the worker and controller gRPC services until ctx is done, then
// stops gracefully. It closes the listeners it is given.
func Run(ctx context.Context, cfg Config) error {
	return run(ctx, cfg)
}

func (cfg Config) withDefaults() Config {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.NodeTimeout <= 0 {
		cfg.NodeTimeout = DefaultNodeTimeout
	}
	if cfg.RecoveryWindow <= 0 {
		cfg.RecoveryWindow = max(cfg.NodeTimeout, minRecoveryWindow)
	}
	if cfg.NodeGoneAfter <= 0 {
		cfg.NodeGoneAfter = DefaultNodeGoneAfter
	}
	cfg.NodeGoneAfter = max(cfg.NodeGoneAfter, cfg.NodeTimeout)
	return cfg
}

func run(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	log := cfg.Logger
	strategy, err := placement.ParseStrategy(cfg.Strategy)
	if err != nil {
		closeAll(cfg.WorkersListener, cfg.ControllersListener, cfg.MetricsListener)
		return fmt.Errorf("scheduler config: %w", err)
	}
	wl, cl, ml, err := openListeners(cfg)
	if err != nil {
		return err
	}
	addrs := []net.Addr{wl.Addr(), cl.Addr()}
	if ml != nil {
		addrs = append(addrs, ml.Addr()) // served over TLS when not on loopback
	}
	sec, err := loadSecurity(cfg, addrs, log)
	if err != nil {
		closeAll(wl, cl, ml)
		return fmt.Errorf("scheduler config: %w", err)
	}
	st := newState(log, strategy, cfg.NodeTimeout, cfg.RecoveryWindow, time.Now)
	st.goneAfter = cfg.NodeGoneAfter
	log.Info("scheduler started", "workers", wl.Addr().String(), "controllers", cl.Addr().String(),
		"strategy", string(strategy), "node_timeout", cfg.NodeTimeout, "node_heartbeat", heartbeatFor(cfg.NodeTimeout), "recovery_window", cfg.RecoveryWindow,
		"tls", sec != nil)
	return serve(ctx, cfg, st, sec, wl, cl, ml)
}

// serve serves the workers on wl, the controllers on cl and the metrics on
// ml (if not nil) and runs the periodic checks, until ctx is done or a
// server fails; then it stops them all.
func serve(ctx context.Context, cfg Config, st *state, sec *security, wl, cl, ml net.Listener) error {
	stop := make(chan struct{}) // closed when the scheduler shuts down: ends the streams
	ws := grpc.NewServer(portOptions(sec, pki.RoleNode, tls.VerifyClientCertIfGiven, maxWorkerMsg, maxWorkerStreams)...)
	workerpb.RegisterWorkerServer(ws, &workerAPI{st: st, sec: sec, stop: stop})
	cs := grpc.NewServer(portOptions(sec, pki.RoleController, tls.RequireAndVerifyClientCert, maxControllerMsg, maxControllerCalls)...)
	controllerpb.RegisterControllerServer(cs, &controllerAPI{st: st, stop: stop})
	health := newHealth(st)
	health.register(ws)
	health.register(cs)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveGRPC(ws, wl, "workers") })
	g.Go(func() error { return serveGRPC(cs, cl, "controllers") })
	g.Go(func() error { monitor(gctx, st, cfg.NodeTimeout); return nil })
	var hs *http.Server
	if ml != nil {
		hsec := httpSecurity(sec, ml)
		hs = httpServer(st.metrics, health, hsec)
		g.Go(func() error { return serveHTTP(hs, ml) })
		cfg.Logger.Info("serving metrics and health", "addr", ml.Addr().String(), "tls", hsec != nil)
	}
	health.setReady() // the listeners are open: connections queue until Serve takes them
	// The one place that stops everything: when ctx is done or a server fails.
	g.Go(func() error {
		<-gctx.Done()
		cfg.Logger.Info("scheduler stopping")
		health.setNotReady(notReadyStopping)
		close(stop)
		var sg sync.WaitGroup
		sg.Go(func() { gracefulStop(ws) })
		sg.Go(func() { gracefulStop(cs) })
		if hs != nil {
			sg.Go(func() { shutdownHTTP(hs) })
		}
		sg.Wait()
		return nil
	})
	return g.Wait()
}

// serveGRPC serves srv on l until it is stopped (maybe before it started
// serving: the scheduler stopped at once).
func serveGRPC(srv *grpc.Server, l net.Listener, what string) error {
	if err := srv.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serving %s on %s: %w", what, l.Addr(), err)
	}
	return nil
}

// closeAll closes the listeners that are set.
func closeAll(ls ...net.Listener) {
	for _, l := range ls {
		if l != nil {
			l.Close()
		}
	}
}

// openListeners opens (or takes) the workers', controllers' and metrics'
// listeners (ml is nil without metrics). On error, every listener is closed,
// the given ones included.
func openListeners(cfg Config) (wl, cl, ml net.Listener, err error) {
	defer func() {
		if err != nil {
			closeAll(wl, cl, ml, cfg.WorkersListener, cfg.ControllersListener, cfg.MetricsListener)
			wl, cl, ml = nil, nil, nil
		}
	}()
	if wl, err = listen(cfg.WorkersListener, cfg.WorkersAddr, DefaultWorkersAddr); err != nil {
		return wl, cl, ml, fmt.Errorf("listening for workers: %w", err)
	}
	if cl, err = listen(cfg.ControllersListener, cfg.ControllersAddr, DefaultControllersAddr); err != nil {
		return wl, cl, ml, fmt.Errorf("listening for controllers: %w", err)
	}
	if cfg.MetricsListener != nil || cfg.MetricsAddr != "" {
		if ml, err = listen(cfg.MetricsListener, cfg.MetricsAddr, ""); err != nil {
			return wl, cl, ml, fmt.Errorf("listening for metrics: %w", err)
		}
	}
	return wl, cl, ml, nil
}

// httpServer serves m at /metrics and h at /healthz and /readyz; over
// TLS, /metrics to controllers only, when sec is set (see httpSecurity).
func httpServer(m *metrics, h *healthState, sec *security) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", requireController(sec, m.handler()))
	mux.HandleFunc("GET /healthz", h.healthz)
	mux.HandleFunc("GET /readyz", h.readyz)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if sec != nil {
		hs.TLSConfig = sec.serverTLS(tls.VerifyClientCertIfGiven)
	}
	return hs
}

// serveHTTP serves hs on l until it is shut down.
func serveHTTP(hs *http.Server, l net.Listener) error {
	serve := hs.Serve
	if hs.TLSConfig != nil {
		serve = func(l net.Listener) error { return hs.ServeTLS(l, "", "") }
	}
	if err := serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving metrics on %s: %w", l.Addr(), err)
	}
	return nil
}

// shutdownHTTP stops hs, forcibly if the graceful shutdown takes too long.
func shutdownHTTP(hs *http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := hs.Shutdown(ctx); err != nil {
		hs.Close()
	}
}

// Keepalive of both servers. Clients (riklets, controllers) ping every 10s
// even without streams to detect a dead scheduler host within ~30s; the
// enforcement policy must allow that, or the server would close their
// connections with GOAWAY "too_many_pings".
var (
	keepaliveParams      = keepalive.ServerParameters{Time: 20 * time.Second, Timeout: 10 * time.Second}
	keepaliveEnforcement = keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}
)

func serverOptions(kp keepalive.ServerParameters, kep keepalive.EnforcementPolicy) []grpc.ServerOption {
	return []grpc.ServerOption{grpc.KeepaliveParams(kp), grpc.KeepaliveEnforcementPolicy(kep)}
}

// Message and stream bounds. A definition is at most 1 MiB (the
// controller's body cap), so an order fits in 1 MiB plus its envelope; a
// node's registration lists what it runs, and its log chunks are 32 KiB.
const (
	maxControllerMsg   = 2 << 20
	maxWorkerMsg       = 4 << 20
	maxSendMsg         = 4 << 20
	maxWorkerStreams   = 32   // a riklet uses 3 streams and a renewal
	maxControllerCalls = 1024 // orders, followed logs, the status stream
	handshakeTimeout   = 10 * time.Second
)

// portOptions are the options of one port's server. Over TLS, callers
// must hold a certificate of role (checked by interceptors); auth says
// whether the TLS handshake requires one (controllers) or only verifies
// one if given (workers: a joining node has none yet, and Join is the only
// call it may make).
func portOptions(sec *security, role pki.Role, auth tls.ClientAuthType, maxRecv int, maxStreams uint32) []grpc.ServerOption {
	opts := append(serverOptions(keepaliveParams, keepaliveEnforcement),
		grpc.MaxRecvMsgSize(maxRecv), grpc.MaxSendMsgSize(maxSendMsg),
		grpc.MaxConcurrentStreams(maxStreams), grpc.ConnectionTimeout(handshakeTimeout))
	if sec == nil {
		return opts
	}
	return append(opts, append(authorize(role), grpc.Creds(credentials.NewTLS(sec.serverTLS(auth))))...)
}

func listen(l net.Listener, addr, def string) (net.Listener, error) {
	if l != nil {
		return l, nil
	}
	if addr == "" {
		addr = def
	}
	return net.Listen("tcp", addr)
}

// gracefulStop stops srv, forcibly if the graceful stop takes too long.
func gracefulStop(srv *grpc.Server) {
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		srv.Stop()
		<-done
	}
}

// monitor runs the periodic checks (lost nodes, recovery window) until ctx
// is done.
func monitor(ctx context.Context, st *state, nodeTimeout time.Duration) {
	t := time.NewTicker(min(max(nodeTimeout/5, 10*time.Millisecond), time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			st.check()
		}
	}
}
