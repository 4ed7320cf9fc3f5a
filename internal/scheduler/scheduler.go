// Package scheduler places workload instances on nodes and relays orders
// (controller → riklet) and statuses (riklet → controllers). Its state is in
// memory and rebuilt after a restart from what the riklets (re-registration)
// and the controllers (re-sent orders) tell it.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/api/proto/workerpb"
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
	closeGiven := func() {
		for _, l := range []net.Listener{cfg.WorkersListener, cfg.ControllersListener, cfg.MetricsListener} {
			if l != nil {
				l.Close()
			}
		}
	}
	strategy, err := placement.ParseStrategy(cfg.Strategy)
	if err != nil {
		closeGiven()
		return fmt.Errorf("scheduler config: %w", err)
	}
	wl, err := listen(cfg.WorkersListener, cfg.WorkersAddr, DefaultWorkersAddr)
	if err != nil {
		closeGiven()
		return fmt.Errorf("listening for workers: %w", err)
	}
	cl, err := listen(cfg.ControllersListener, cfg.ControllersAddr, DefaultControllersAddr)
	if err != nil {
		wl.Close()
		closeGiven()
		return fmt.Errorf("listening for controllers: %w", err)
	}

	var ml net.Listener
	if cfg.MetricsListener != nil || cfg.MetricsAddr != "" {
		if ml, err = listen(cfg.MetricsListener, cfg.MetricsAddr, ""); err != nil {
			wl.Close()
			cl.Close()
			closeGiven()
			return fmt.Errorf("listening for metrics: %w", err)
		}
	}

	if cfg.NodeGoneAfter <= 0 {
		cfg.NodeGoneAfter = DefaultNodeGoneAfter
	}
	cfg.NodeGoneAfter = max(cfg.NodeGoneAfter, cfg.NodeTimeout)
	st := newState(log, strategy, cfg.NodeTimeout, cfg.RecoveryWindow, time.Now)
	st.goneAfter = cfg.NodeGoneAfter
	st.subBuffer = subBuffer
	stop := make(chan struct{})
	opts := serverOptions(keepaliveParams, keepaliveEnforcement)
	ws := grpc.NewServer(opts...)
	workerpb.RegisterWorkerServer(ws, &workerAPI{st: st, stop: stop})
	cs := grpc.NewServer(opts...)
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
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", st.metrics.handler())
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		wg.Go(func() {
			if err := hs.Serve(ml); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serving metrics on %s: %w", ml.Addr(), err)
			}
		})
		wg.Go(func() {
			<-mctx.Done()
			sctx, scancel := context.WithTimeout(context.Background(), stopTimeout)
			defer scancel()
			if err := hs.Shutdown(sctx); err != nil {
				hs.Close()
			}
		})
		log.Info("serving metrics", "addr", ml.Addr().String())
	}
	log.Info("scheduler started", "workers", wl.Addr().String(), "controllers", cl.Addr().String(),
		"strategy", string(strategy), "node_timeout", cfg.NodeTimeout, "node_heartbeat", heartbeatFor(cfg.NodeTimeout), "recovery_window", cfg.RecoveryWindow)

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
