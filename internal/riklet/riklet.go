// Package riklet is the node agent: it registers with the scheduler, runs
// the instances it is ordered to run through one runtime per workload kind,
// applies restart policies, reports every status change and keeps a ledger
// of what it owns so that a restarted riklet adopts what still runs.
package riklet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rik-org/rik/api/proto/workerpb"
	"github.com/rik-org/rik/internal/grpcutil"
	"github.com/rik-org/rik/internal/pki"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/workload"
)

// Version is reported in the registration.
var Version = "dev"

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

	// knobs shortens delays in tests; nil means the defaults.
	knobs *knobs
}

// knobs are the agent's delays and bounds.
type knobs struct {
	restartBase   time.Duration // first restart delay (1s)
	restartMax    time.Duration // cap (60s)
	restartReset  time.Duration // running this long resets the backoff (10m)
	connMin       time.Duration // reconnect backoff (0.2s)
	connMax       time.Duration // (5s)
	startTimeout  time.Duration // (10m)
	stopTimeout   time.Duration // (2m)
	queueMax      int           // status queue bound (1024)
	renewRetryMax time.Duration // longest wait between failed certificate renewals (1m)
}

func defaultKnobs() knobs {
	return knobs{
		restartBase:   time.Second,
		restartMax:    60 * time.Second,
		restartReset:  10 * time.Minute,
		connMin:       200 * time.Millisecond,
		connMax:       5 * time.Second,
		startTimeout:  10 * time.Minute,
		stopTimeout:   2 * time.Minute,
		queueMax:      1024,
		renewRetryMax: time.Minute,
	}
}

// DefaultMasterAddr is the scheduler's worker endpoint.
const DefaultMasterAddr = "127.0.0.1:4995"

// normalizeAddr turns "http://h:p/", "h:p" or "h" into "h:p".
func normalizeAddr(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return DefaultMasterAddr, nil
	}
	for _, p := range []string{"http://", "https://", "grpc://"} {
		if len(s) >= len(p) && strings.EqualFold(s[:len(p)], p) {
			s = s[len(p):]
			break
		}
	}
	s = strings.TrimRight(s, "/")
	if s == "" || strings.ContainsAny(s, "/?# ") {
		return "", fmt.Errorf("master address %q: want host:port", s)
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		// No port: RIK's default worker port.
		s = net.JoinHostPort(strings.Trim(s, "[]"), "4995")
	}
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("master address %q: %w", s, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("master address %q: want host:port with a port in 1-65535", s)
	}
	return s, nil
}

func (c Config) withDefaults() (Config, error) {
	var err error
	if c.MasterAddr, err = normalizeAddr(c.MasterAddr); err != nil {
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
	k := defaultKnobs()
	if c.knobs != nil {
		o := *c.knobs
		for _, p := range []struct{ dst, src *time.Duration }{
			{&k.restartBase, &o.restartBase}, {&k.restartMax, &o.restartMax},
			{&k.restartReset, &o.restartReset}, {&k.connMin, &o.connMin},
			{&k.connMax, &o.connMax}, {&k.startTimeout, &o.startTimeout},
			{&k.stopTimeout, &o.stopTimeout}, {&k.renewRetryMax, &o.renewRetryMax},
		} {
			if *p.src > 0 {
				*p.dst = *p.src
			}
		}
		if o.queueMax > 0 {
			k.queueMax = o.queueMax
		}
	}
	c.knobs = &k
	return c, nil
}

// Run runs the agent until ctx is done. It returns an error only when it
// cannot start (state directory, ledger, scheduler address) or, with
// StopOnExit, when some instances could not be stopped; a scheduler that
// is down is retried forever.
func Run(ctx context.Context, cfg Config) (err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return err
	}
	log := cfg.Logger
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
	var id *identity
	if !cfg.Insecure {
		if id, err = setupIdentity(cfg); err != nil {
			return err
		}
	}
	ledger, err := OpenLedger(filepath.Join(cfg.StateDir, "ledger.json"), log)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	a := newAgent(ctx, cfg, ledger)
	defer func() {
		cancel()
		a.shutdown()
		if cfg.StopOnExit {
			if serr := a.stopAll(); serr != nil && err == nil {
				err = serr
			}
		}
		a.closeRuntimes()
	}()

	a.buildRuntimes(ctx)
	if ctx.Err() != nil {
		// Stopped while starting: runtimes may have failed because of it;
		// recovering without them would misjudge what the node runs.
		return nil
	}
	a.recover(ctx)

	if !cfg.Insecure && id == nil {
		if id, err = a.join(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}

	creds := insecure.NewCredentials()
	if id != nil {
		creds = credentials.NewTLS(id.clientTLS())
	}
	conn, err := grpc.NewClient(cfg.MasterAddr, grpc.WithTransportCredentials(creds), a.connectParams(),
		grpc.WithKeepaliveParams(grpcutil.SchedulerKeepalive))
	if err != nil {
		return fmt.Errorf("dialing scheduler %s: %w", cfg.MasterAddr, err)
	}
	defer conn.Close()
	client := workerpb.NewWorkerClient(conn)
	log.Info("riklet started", "hostname", cfg.Hostname, "scheduler", cfg.MasterAddr, "kinds", a.kinds,
		"instances", a.ledgerLen(), "tls", id != nil)
	if id != nil {
		done := make(chan struct{})
		defer func() { cancel(); <-done }()
		go func() { defer close(done); a.renewLoop(ctx, client, id) }()
	}
	a.connectLoop(ctx, client)
	return nil
}

// buildRuntimes builds the configured runtimes; one that fails is left
// out (its kind is not advertised).
func (a *agent) buildRuntimes(ctx context.Context) {
	for i, f := range a.cfg.Runtimes {
		if f == nil {
			continue
		}
		rt, err := a.buildRuntime(ctx, f)
		if err != nil {
			a.log.Warn("runtime unavailable, its kind is not advertised", "runtime", i, "error", err)
			continue
		}
		if rt == nil {
			a.log.Warn("runtime factory returned no runtime", "runtime", i)
			continue
		}
		a.all = append(a.all, rt)
		k := rt.Kind()
		if _, dup := a.runtimes[k]; dup {
			a.log.Warn("second runtime for a kind ignored", "kind", k)
			continue
		}
		a.runtimes[k] = rt
		a.kinds = append(a.kinds, string(k))
	}
	slices.Sort(a.kinds)
	if len(a.kinds) == 0 {
		a.log.Warn("no runtime available: this node cannot run anything")
	}
}

// connectParams keeps gRPC's own reconnect backoff (up to 120s by
// default) within ours: it would delay re-registering after a scheduler
// restart.
func (a *agent) connectParams() grpc.DialOption {
	return grpc.WithConnectParams(grpc.ConnectParams{
		Backoff: grpcbackoff.Config{
			BaseDelay: a.k.connMin, Multiplier: 1.6, Jitter: 0.2, MaxDelay: a.k.connMax,
		},
		MinConnectTimeout: 5 * time.Second,
	})
}

// runtimeAttempts bounds how many times a runtime that fails to start is
// tried (a transient failure, e.g. iptables' lock held by another program,
// must not leave the node without it).
const runtimeAttempts = 3

// buildRuntime builds a runtime with f, trying again after a backoff delay
// when it fails, until runtimeAttempts or ctx is done.
func (a *agent) buildRuntime(ctx context.Context, f RuntimeFactory) (runtime.Runtime, error) {
	b := backoff{min: a.k.connMin, max: a.k.connMax}
	for i := 1; ; i++ {
		rt, err := f(ctx, a.onRuntimeStatus)
		if err == nil || i == runtimeAttempts || ctx.Err() != nil {
			return rt, err
		}
		d := b.next()
		a.log.Warn("runtime failed to start, trying again", "error", err, "in", d.Round(time.Millisecond))
		if !sleep(ctx.Done(), d) {
			return nil, err
		}
	}
}

// kindOf normalises a kind read from the ledger.
func kindOf(k workload.Kind) workload.Kind {
	if n, err := workload.ParseKind(string(k)); err == nil {
		return n
	}
	return k
}
