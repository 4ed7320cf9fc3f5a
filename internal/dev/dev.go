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
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rik-org/rik/internal/controller"
	"github.com/rik-org/rik/internal/riklet"
	"github.com/rik-org/rik/internal/scheduler"
	"github.com/rik-org/rik/internal/store/bolt"
)

// Config of a dev cluster.
type Config struct {
	DataDir         string // store and riklet state (required; see Temporary)
	Addr            string // REST API, default 127.0.0.1:5000
	WorkersAddr     string // default 127.0.0.1:4995
	ControllersAddr string // default 127.0.0.1:4996
	Hostname        string // the riklet's node name, default the host name
	Runtimes        []riklet.RuntimeFactory
	NodeTimeout     time.Duration
	Logger          *slog.Logger
	Out             io.Writer // where the welcome text goes
	// Temporary says DataDir is a temporary directory nothing will reuse:
	// on exit the riklet stops every instance, and DataDir is removed once
	// they all stopped (else it is kept, with what still runs).
	Temporary bool
	// Uninstall, when set, is called on exit of a Temporary cluster once
	// the riklet stopped every instance, to remove what the node put on
	// the host (rik's iptables chains and jumps, the pod bridge). It is not
	// called when some instance did not stop, nor when DataDir is kept.
	Uninstall func(ctx context.Context) error
	// HostLockDir: see riklet.Config (cmd/rik: riklet.DefaultHostLockDir).
	HostLockDir string
}

// uninstallTimeout bounds the host clean-up on exit.
const uninstallTimeout = 30 * time.Second

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
	log := cfg.Logger
	keepData := false // some instances did not stop: keep their state
	if cfg.Temporary {
		defer func() { // after the store is closed
			if keepData {
				log.Warn("keeping the data directory: some instances did not stop", "dir", cfg.DataDir)
			} else if err := removeTemporary(cfg.DataDir); err != nil {
				log.Warn("removing the data directory", "dir", cfg.DataDir, "error", err)
			}
		}()
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

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg        sync.WaitGroup
		once      sync.Once
		firstErr  error
		rikletErr error
	)
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := f(ctx)
			if name == "riklet" {
				rikletErr = err
			}
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
			MasterAddr:  workers.Addr().String(),
			Hostname:    cfg.Hostname,
			StateDir:    cfg.DataDir + "/riklet",
			Runtimes:    cfg.Runtimes,
			Logger:      log.With("component", "riklet"),
			StopOnExit:  cfg.Temporary,
			HostLockDir: cfg.HostLockDir,
		})
	})
	dataNote := ""
	if cfg.Temporary {
		dataNote = " (temporary: on exit, instances stop and it is removed; --data-dir keeps them)"
	}
	fmt.Fprintf(cfg.Out, `rik dev is running.
  API:        http://%s  (GET /api/v0/openapi.yaml)
  data:       %s%s
  node:       %s
Try:
  rikctl get nodes
  rikctl create workload -f examples/pod-httpd.json
  rikctl create instance --workload-id httpd
  rikctl get instances -o wide
(rikctl talks to http://127.0.0.1:5000 by default; set RIKCONFIG for another server.)
Stop with Ctrl-C.
`, api.Addr(), cfg.DataDir, dataNote, cfg.Hostname)
	wg.Wait()
	keepData = rikletErr != nil
	if cfg.Temporary && !keepData && cfg.Uninstall != nil {
		// ctx is done by now: the clean-up gets its own deadline.
		uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), uninstallTimeout)
		defer ucancel()
		if err := cfg.Uninstall(uctx); err != nil {
			log.Warn("leaving rik's network on the host (`riklet --uninstall` removes it)", "error", err)
		}
	}
	return firstErr
}

// removeTemporary removes dir, unless something is still mounted under it
// (removing would reach into the mount).
func removeTemporary(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("reading mounts: %w", err)
	}
	unescape := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		if mp := unescape.Replace(f[4]); mp == dir || strings.HasPrefix(mp, dir+"/") {
			return fmt.Errorf("%s is still mounted", mp)
		}
	}
	return os.RemoveAll(dir)
}
