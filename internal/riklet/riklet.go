// Package riklet is the node agent. Run wires its parts: the ledger of
// what the node owns (ledger), the runtimes (one per workload kind), the
// supervisor that runs the instances through their lifecycle
// (supervisor), and the session with the scheduler (schedlink).
package riklet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/rik-org/rik/internal/pki"
	"github.com/rik-org/rik/internal/riklet/backoff"
	"github.com/rik-org/rik/internal/riklet/ledger"
	"github.com/rik-org/rik/internal/riklet/metrics"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/riklet/schedlink"
	"github.com/rik-org/rik/internal/riklet/supervisor"
	"github.com/rik-org/rik/internal/version"
)

// RuntimeFactory builds one runtime; report receives the status changes it
// sees on its own.
type RuntimeFactory func(ctx context.Context, report runtime.Reporter) (runtime.Runtime, error)

// Config of a riklet.
type Config struct {
	MasterAddr        string // scheduler address for workers, "127.0.0.1:4995"; "http://h:p" accepted
	Hostname          string // node name
	StateDir          string // ledger and runtime state, /var/lib/riklet
	Runtimes          []RuntimeFactory
	Labels            map[string]string
	HeartbeatInterval time.Duration // 5s
	Logger            *slog.Logger
	// StopOnExit stops and forgets every instance when Run returns, for a
	// node whose state does not outlive it (`rik dev` in a temporary
	// directory): no later riklet would adopt what it left running.
	StopOnExit bool
	// HostLockDir, when set, is where the riklet takes the lock that makes
	// it the only one in its network namespace (see LockHost); Run fails
	// when another holds it. Real nodes use DefaultHostLockDir.
	HostLockDir string

	// Unless Insecure, the riklet talks to the scheduler over TLS with a
	// node certificate kept in PKIDir (default <StateDir>/pki: node.crt,
	// node.key, ca.crt). Without one, it joins: it makes a key there
	// (never sent anywhere), and asks the scheduler for a certificate with
	// JoinToken, trusting the scheduler only if its CA's public key has
	// the hash CACertHash ("sha256:<hex>", as `rik ca init` prints it).
	// The certificate is renewed when two thirds of its lifetime passed.
	PKIDir     string
	JoinToken  string
	CACertHash string
	// Insecure talks plaintext, with no certificate (RIK's scheduler, or
	// one started with --insecure).
	Insecure bool

	// MetricsAddr, when set, serves the node's metrics at /metrics and
	// /healthz there, without authentication; MetricsListener is used
	// instead when set (tests).
	MetricsAddr     string
	MetricsListener net.Listener

	// Network, when set, receives the node's network maps from the
	// scheduler (its pod subnet and its peers': fabric.Fabric), and
	// NodeAddress is the address registered ("": the first of the host's).
	Network     schedlink.Network
	NodeAddress string

	// connMin and connMax bound the delays between reconnects and between
	// runtime construction attempts; zero: the defaults. Tests shorten them.
	connMin, connMax time.Duration
}

// DefaultMasterAddr is the scheduler's worker endpoint.
const DefaultMasterAddr = schedlink.DefaultAddr

func (c Config) withDefaults() (Config, error) {
	var err error
	if c.MasterAddr, err = schedlink.NormalizeAddr(c.MasterAddr); err != nil {
		return c, err
	}
	if c.Hostname == "" {
		if c.Hostname, err = os.Hostname(); err != nil {
			return c, fmt.Errorf("reading hostname: %w", err)
		}
	}
	if c.StateDir == "" {
		c.StateDir = "/var/lib/riklet"
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.PKIDir == "" {
		c.PKIDir = filepath.Join(c.StateDir, "pki")
	}
	if !c.Insecure && c.JoinToken != "" {
		if c.CACertHash == "" {
			return c, errors.New("a join token needs the CA's hash (--ca-cert-hash sha256:..., printed by `rik ca init`): it is how the node knows it joins the right cluster")
		}
		if err := pki.ValidHash(c.CACertHash); err != nil {
			return c, fmt.Errorf("--ca-cert-hash: %w", err)
		}
	}
	if c.connMin <= 0 {
		c.connMin = 200 * time.Millisecond
	}
	if c.connMax <= 0 {
		c.connMax = 5 * time.Second
	}
	return c, nil
}

// link is the configuration of the session with the scheduler.
func (c Config) link() schedlink.Config {
	return schedlink.Config{
		Addr: c.MasterAddr, Hostname: c.Hostname, Labels: c.Labels, StateDir: c.StateDir,
		HeartbeatInterval: c.HeartbeatInterval, Version: version.Version, Logger: c.Logger,
		Insecure: c.Insecure, PKIDir: c.PKIDir, JoinToken: c.JoinToken, CACertHash: c.CACertHash,
		ConnMin: c.connMin, ConnMax: c.connMax, Network: c.Network, Address: c.NodeAddress,
	}
}

// Run runs the riklet until ctx is done. It returns an error only when it
// cannot start (host lock, state directory, node certificate, ledger,
// scheduler address, a refused join) or, with StopOnExit, when some
// instances could not be stopped; a scheduler that is down is retried
// forever.
func Run(ctx context.Context, cfg Config) (err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return err
	}
	if cfg.HostLockDir != "" {
		release, err := LockHost(cfg.HostLockDir)
		if err != nil {
			return err
		}
		defer release()
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("creating state dir: %w", err)
	}
	id, err := schedlink.LoadIdentity(cfg.link())
	if err != nil {
		return err
	}
	led, err := ledger.Open(filepath.Join(cfg.StateDir, "ledger.json"), 0, cfg.Logger)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	obs, stopMetrics, err := startMetrics(ctx, cfg, led)
	if err != nil {
		cancel()
		return err
	}
	defer stopMetrics() // after the cancel below
	sup := supervisor.New(ctx, supervisor.Config{Ledger: led, Logger: cfg.Logger, Observer: obs})
	var rts []runtime.Runtime
	defer func() {
		cancel()
		sup.Close()
		if cfg.StopOnExit {
			if serr := sup.StopAll(); serr != nil && err == nil {
				err = serr
			}
		}
		closeRuntimes(rts, cfg.Logger)
	}()
	rts = buildRuntimes(ctx, cfg, sup.Report)
	sup.SetRuntimes(rts)
	if ctx.Err() != nil {
		// Stopped while starting: runtimes may have failed because of it;
		// recovering without them would misjudge what the node runs.
		return nil
	}
	sup.Recover(ctx)
	return schedlink.New(cfg.link(), id, sup, led).Run(ctx)
}

// startMetrics serves the node's metrics until ctx is done, if asked to;
// wait waits for the server to stop.
func startMetrics(ctx context.Context, cfg Config, led *ledger.Ledger) (obs supervisor.Observer, wait func(), err error) {
	l := cfg.MetricsListener
	if l == nil && cfg.MetricsAddr == "" {
		return nil, func() {}, nil
	}
	if l == nil {
		if l, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			return nil, nil, fmt.Errorf("listening for metrics: %w", err)
		}
	}
	m := metrics.New(led)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := m.Serve(ctx, l); err != nil {
			cfg.Logger.Error("metrics endpoint failed", "error", err)
		}
	}()
	cfg.Logger.Info("serving metrics", "addr", l.Addr().String())
	return m, func() { <-done }, nil
}

// buildRuntimes builds the configured runtimes; one that fails is left
// out (its kind is not advertised).
func buildRuntimes(ctx context.Context, cfg Config, report runtime.Reporter) []runtime.Runtime {
	var rts []runtime.Runtime
	for i, f := range cfg.Runtimes {
		if f == nil {
			continue
		}
		rt, err := buildRuntime(ctx, cfg, f, report)
		if err != nil {
			cfg.Logger.Warn("runtime unavailable, its kind is not advertised", "runtime", i, "error", err)
			continue
		}
		if rt == nil {
			cfg.Logger.Warn("runtime factory returned no runtime", "runtime", i)
			continue
		}
		rts = append(rts, rt)
	}
	return rts
}

// runtimeAttempts bounds how many times a runtime that fails to start is
// tried (a transient failure, e.g. iptables' lock held by another program,
// must not leave the node without it).
const runtimeAttempts = 3

// buildRuntime builds a runtime with f, trying again after a backoff delay
// when it fails, until runtimeAttempts or ctx is done.
func buildRuntime(ctx context.Context, cfg Config, f RuntimeFactory, report runtime.Reporter) (runtime.Runtime, error) {
	b := backoff.Jittered{Min: cfg.connMin, Max: cfg.connMax}
	for i := 1; ; i++ {
		rt, err := f(ctx, report)
		if err == nil || i == runtimeAttempts || ctx.Err() != nil {
			return rt, err
		}
		d := b.Next()
		cfg.Logger.Warn("runtime failed to start, trying again", "error", err, "in", d.Round(time.Millisecond))
		if !backoff.Sleep(ctx, d) {
			return nil, err
		}
	}
}

// closeRuntimes closes the runtimes that have a Close method (they stop
// watching; what they run keeps running for the next riklet to adopt).
func closeRuntimes(rts []runtime.Runtime, log *slog.Logger) {
	for _, rt := range rts {
		if c, ok := rt.(io.Closer); ok {
			if err := c.Close(); err != nil {
				log.Warn("closing runtime", "kind", rt.Kind(), "error", err)
			}
		}
	}
}
