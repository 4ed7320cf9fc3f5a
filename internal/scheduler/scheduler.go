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
	// (e.g. "127.0.0.1:9100"); "" (default): no metrics endpoint.
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

// defaultSubBuffer is how many statuses a controller subscriber may lag behind
// before it is dropped.
const defaultSubBuffer = 1024

// Run serves the worker and controller gRPC services until ctx is done, then
// stops gracefully. It closes the listeners it is given.
func Run(ctx context.Context, cfg Config) error {
	return run(ctx, cfg, defaultSubBuffer)
}

func run(ctx context.Context, cfg Config, subBuffer int) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.NodeTimeout <= 0 {
		cfg.NodeTimeout = DefaultNodeTimeout
	}
	if cfg.RecoveryWindow <= 0 {
		cfg.RecoveryWindow = max(cfg.NodeTimeout, minRecoveryWindow)
	}
	strategy, err := placement.ParseStrategy(cfg.Strategy)
	if err != nil {
		closeAll(cfg.WorkersListener, cfg.ControllersListener, cfg.MetricsListener)
		return fmt.Errorf("scheduler config: %w", err)
	}
	wl, cl, ml, err := openListeners(cfg)
	if err != nil {
		return err
	}
	sec, err := loadSecurity(cfg, []net.Addr{wl.Addr(), cl.Addr()}, log)
	if err != nil {
		closeAll(wl, cl, ml)
		return fmt.Errorf("scheduler config: %w", err)
	}

	if cfg.NodeGoneAfter <= 0 {
		cfg.NodeGoneAfter = DefaultNodeGoneAfter
	}
	cfg.NodeGoneAfter = max(cfg.NodeGoneAfter, cfg.NodeTimeout)
	st := newState(log, strategy, cfg.NodeTimeout, cfg.RecoveryWindow, time.Now)
	st.goneAfter = cfg.NodeGoneAfter
	st.subBuffer = subBuffer
	stop := make(chan struct{})
	ws := grpc.NewServer(portOptions(sec, pki.RoleNode, tls.VerifyClientCertIfGiven, maxWorkerMsg, maxWorkerStreams)...)
	workerpb.RegisterWorkerServer(ws, &workerAPI{st: st, sec: sec, stop: stop})
	cs := grpc.NewServer(portOptions(sec, pki.RoleController, tls.RequireAndVerifyClientCert, maxControllerMsg, maxControllerCalls)...)
	controllerpb.RegisterControllerServer(cs, &controllerAPI{st: st, stop: stop})

	var wg sync.WaitGroup
	errc := make(chan error, 3)
	serve := func(srv *grpc.Server, l net.Listener, what string) {
		if err := srv.Serve(l); err != nil {
			errc <- fmt.Errorf("serving %s on %s: %w", what, l.Addr(), err)
		}
	}
	wg.Go(func() { serve(ws, wl, "workers") })
	wg.Go(func() { serve(cs, cl, "controllers") })
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() { monitor(mctx, st, cfg.NodeTimeout) })
	if ml != nil {
		serveMetrics(mctx, &wg, ml, st.metrics, errc)
		log.Info("serving metrics", "addr", ml.Addr().String())
	}
	log.Info("scheduler started", "workers", wl.Addr().String(), "controllers", cl.Addr().String(),
		"strategy", string(strategy), "node_timeout", cfg.NodeTimeout, "node_heartbeat", heartbeatFor(cfg.NodeTimeout), "recovery_window", cfg.RecoveryWindow,
		"tls", sec != nil)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	log.Info("scheduler stopping")
	cancel()
	close(stop)
	var sg sync.WaitGroup
	sg.Go(func() { gracefulStop(ws) })
	sg.Go(func() { gracefulStop(cs) })
	sg.Wait()
	wg.Wait()
	return runErr
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

// serveMetrics serves m on ml until ctx is done, in goroutines of wg.
func serveMetrics(ctx context.Context, wg *sync.WaitGroup, ml net.Listener, m *metrics, errc chan<- error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.handler())
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	wg.Go(func() {
		if err := hs.Serve(ml); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serving metrics on %s: %w", ml.Addr(), err)
		}
	})
	wg.Go(func() {
		<-ctx.Done()
		sctx, scancel := context.WithTimeout(context.Background(), stopTimeout)
		defer scancel()
		if err := hs.Shutdown(sctx); err != nil {
			hs.Close()
		}
	})
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
