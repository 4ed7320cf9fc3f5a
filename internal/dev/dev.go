// Package dev runs a whole rik cluster in one process: controller,
// scheduler and one riklet on loopback, on the embedded store. It is the
// one-command way to try rik (`rik dev`).
package dev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/rik-org/rik/internal/controller"
	"github.com/rik-org/rik/internal/riklet"
	"github.com/rik-org/rik/internal/scheduler"
	"github.com/rik-org/rik/internal/store/bolt"
)

// Config of a dev cluster.
type Config struct {
	DataDir         string // store and riklet state; "" = a new temporary directory
	Addr            string // REST API, default 127.0.0.1:5000
	WorkersAddr     string // default 127.0.0.1:4995
	ControllersAddr string // default 127.0.0.1:4996
	Hostname        string // the riklet's node name, default the host name
	Runtimes        []riklet.RuntimeFactory
	NodeTimeout     time.Duration
	Logger          *slog.Logger
	Out             io.Writer // where the welcome text goes
}

// Run starts the cluster and blocks until ctx is done or a component fails.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:5000"
	}
	if cfg.WorkersAddr == "" {
		cfg.WorkersAddr = "127.0.0.1:4995"
	}
	if cfg.ControllersAddr == "" {
		cfg.ControllersAddr = "127.0.0.1:4996"
	}
	if cfg.Hostname == "" {
		cfg.Hostname, _ = os.Hostname()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.DataDir == "" {
		return errors.New("no data dir")
	}
	// Bind every port first, so a port in use is reported before anything starts.
	api, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listening for the API on %s: %w", cfg.Addr, err)
	}
	workers, err := net.Listen("tcp", cfg.WorkersAddr)
	if err != nil {
		api.Close()
		return fmt.Errorf("listening for workers on %s: %w", cfg.WorkersAddr, err)
	}
	ctrls, err := net.Listen("tcp", cfg.ControllersAddr)
	if err != nil {
		api.Close()
		workers.Close()
		return fmt.Errorf("listening for controllers on %s: %w", cfg.ControllersAddr, err)
	}
	st, err := bolt.Open(cfg.DataDir + "/data")
	if err != nil {
		api.Close()
		workers.Close()
		ctrls.Close()
		return err
	}
	defer st.Close()

	log := cfg.Logger
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := f(ctx)
			if err != nil && !errors.Is(err, context.Canceled) {
				once.Do(func() { firstErr = fmt.Errorf("%s: %w", name, err) })
			}
			cancel() // one component down stops the others
		}()
	}
	run("scheduler", func(ctx context.Context) error {
		return scheduler.Run(ctx, scheduler.Config{
			WorkersListener:     workers,
			ControllersListener: ctrls,
			NodeTimeout:         cfg.NodeTimeout,
			RecoveryWindow:      cfg.NodeTimeout,
			Logger:              log.With("component", "scheduler"),
		})
	})
	run("controller", func(ctx context.Context) error {
		return controller.Run(ctx, controller.Config{
			Listener:      api,
			Store:         st,
			SchedulerAddr: ctrls.Addr().String(),
			Logger:        log.With("component", "controller"),
		})
	})
	run("riklet", func(ctx context.Context) error {
		return riklet.Run(ctx, riklet.Config{
			MasterAddr: workers.Addr().String(),
			Hostname:   cfg.Hostname,
			StateDir:   cfg.DataDir + "/riklet",
			Runtimes:   cfg.Runtimes,
			Logger:     log.With("component", "riklet"),
		})
	})
	fmt.Fprintf(cfg.Out, `rik dev is running.
  API:        http://%s  (GET /api/v0/openapi.yaml)
  data:       %s
  node:       %s
Try:
  rikctl get nodes
  rikctl create workload -f examples/pod-httpd.json
  rikctl create instance --workload-id httpd
  rikctl get instances -o wide
(rikctl talks to http://127.0.0.1:5000 by default; set RIKCONFIG for another server.)
Stop with Ctrl-C.
`, api.Addr(), cfg.DataDir, cfg.Hostname)
	wg.Wait()
	return firstErr
}
