// Package schedlink is the riklet's session with the scheduler: it joins
// the cluster and renews the node certificate, registers (again after the
// scheduler restarts), passes orders to the supervisor, sends the
// statuses the ledger queues and the heartbeats, and serves log requests.
package schedlink

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/workerpb"
	"github.com/rik-org/rik/internal/grpcutil"
	"github.com/rik-org/rik/internal/riklet/backoff"
	"github.com/rik-org/rik/internal/riklet/hostinfo"
	"github.com/rik-org/rik/internal/riklet/runtime"
)

// Supervisor is what the session needs of the node's instances.
type Supervisor interface {
	// Create and Destroy take an order; they return at once.
	Create(id, workloadID, name string, definition []byte)
	Destroy(id, workloadID string)
	// Logs writes the logs of an instance the node owns.
	Logs(ctx context.Context, id string, opts runtime.LogOptions, w io.Writer) error
	// Kinds lists the workload kinds the node runs.
	Kinds() []string
}

// Statuses is the queue of instance statuses to send (the ledger's).
type Statuses interface {
	// Snapshot is the latest status of every owned instance.
	Snapshot() []*commonpb.InstanceMetric
	// Resend puts the latest status of every owned instance first.
	Resend()
	// Peek returns the first status queued; Pop removes it once sent.
	Peek() (*commonpb.InstanceMetric, bool)
	Pop(*commonpb.InstanceMetric)
	// Ready is signalled when a status is queued.
	Ready() <-chan struct{}
}

// Config of the session. Zero durations take their defaults.
type Config struct {
	Addr              string // scheduler address for workers, host:port (see NormalizeAddr)
	Hostname          string // node name
	Labels            map[string]string
	StateDir          string        // its filesystem's size and use are reported as the node's disk
	HeartbeatInterval time.Duration // 5s, or shorter when the scheduler asks
	Version           string        // reported in the registration
	Logger            *slog.Logger
	// Address is the node address registered ("": hostinfo.Address()).
	Address string
	// Network, when set, receives the node's network maps (its pod
	// subnet and its peers').
	Network Network

	// Unless Insecure, the session runs over TLS with the node certificate
	// of PKIDir, joining with JoinToken and the pinned CACertHash when
	// there is none (see LoadIdentity).
	Insecure   bool
	PKIDir     string
	JoinToken  string
	CACertHash string

	ConnMin       time.Duration // first reconnect delay (0.2s)
	ConnMax       time.Duration // longest reconnect delay (5s)
	RenewRetryMax time.Duration // longest wait between failed certificate renewals (1m)
}

func (c Config) withDefaults() Config {
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&c.HeartbeatInterval, 5 * time.Second}, {&c.ConnMin, 200 * time.Millisecond},
		{&c.ConnMax, 5 * time.Second}, {&c.RenewRetryMax, time.Minute},
	} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Link is the session with the scheduler.
type Link struct {
	cfg  Config
	log  *slog.Logger
	sup  Supervisor
	st   Statuses
	host *hostinfo.Sampler
	id   *Identity // nil: insecure, or not joined yet

	// heartbeatEvery is the heartbeat interval in use (a time.Duration):
	// the configured one, or shorter when the scheduler asks.
	heartbeatEvery atomic.Int64
}

// New returns the session of a node whose certificate is id (nil when
// Insecure, or when it must join: see LoadIdentity).
func New(cfg Config, id *Identity, sup Supervisor, st Statuses) *Link {
	cfg = cfg.withDefaults()
	return &Link{cfg: cfg, log: cfg.Logger, sup: sup, st: st, host: hostinfo.New("/proc", cfg.StateDir), id: id}
}

// Run joins the cluster if the node has no certificate yet, then keeps a
// session with the scheduler until ctx is done, re-registering (with
// backoff) whenever it breaks, and renews the node certificate. It returns
// an error only when the node cannot join (a refused token, a CA that does
// not match the pin); a scheduler that is down is retried forever.
func (l *Link) Run(ctx context.Context) error {
	if !l.cfg.Insecure && l.id == nil {
		id, err := l.join(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		l.id = id
	}
	creds := insecure.NewCredentials()
	if l.id != nil {
		creds = credentials.NewTLS(l.id.clientTLS())
	}
	conn, err := grpc.NewClient(l.cfg.Addr, grpc.WithTransportCredentials(creds), l.connectParams(),
		grpc.WithKeepaliveParams(grpcutil.SchedulerKeepalive))
	if err != nil {
		return fmt.Errorf("dialing scheduler %s: %w", l.cfg.Addr, err)
	}
	defer conn.Close()
	client := workerpb.NewWorkerClient(conn)
	l.log.Info("riklet started", "hostname", l.cfg.Hostname, "scheduler", l.cfg.Addr, "kinds", l.sup.Kinds(),
		"instances", len(l.st.Snapshot()), "tls", l.id != nil)
	var wg sync.WaitGroup
	if l.id != nil {
		wg.Go(func() { l.renewLoop(ctx, client) })
	}
	l.retryLoop(ctx, "scheduler connection failed, retrying",
		func(ctx context.Context) error { return l.session(ctx, client) }, nil)
	wg.Wait()
	return nil
}

// connectParams keeps gRPC's own reconnect backoff (up to 120s by
// default) within ours: it would delay re-registering after a scheduler
// restart.
func (l *Link) connectParams() grpc.DialOption {
	return grpc.WithConnectParams(grpc.ConnectParams{
		Backoff: grpcbackoff.Config{
			BaseDelay: l.cfg.ConnMin, Multiplier: 1.6, Jitter: 0.2, MaxDelay: l.cfg.ConnMax,
		},
		MinConnectTimeout: 5 * time.Second,
	})
}

// retryLoop runs fn until ctx is done, again after a backoff delay each
// time it returns (logging msg and its error), quickly again when it
// worked for a while. It returns early when stop (if not nil) reports
// true for fn's error.
func (l *Link) retryLoop(ctx context.Context, msg string, fn func(context.Context) error, stop func(error) bool) {
	b := backoff.Jittered{Min: l.cfg.ConnMin, Max: l.cfg.ConnMax}
	for {
		began := time.Now()
		err := fn(ctx)
		if ctx.Err() != nil {
			return
		}
		if stop != nil && stop(err) {
			return
		}
		if time.Since(began) > l.cfg.ConnMax {
			b.Reset() // it worked for a while: retry quickly
		}
		d := b.Next()
		l.log.Warn(msg, "error", err, "in", d.Round(time.Millisecond))
		if !backoff.Sleep(ctx, d) {
			return
		}
	}
}

// DefaultAddr is the scheduler's worker endpoint.
const DefaultAddr = "127.0.0.1:4995"

// NormalizeAddr turns "http://h:p/", "h:p" or "h" into "h:p" ("" is
// DefaultAddr; the port defaults to RIK's worker port, 4995).
func NormalizeAddr(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return DefaultAddr, nil
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
