// Package link is the controller's session with the scheduler: it keeps
// the controller subscribed to the status stream (handing each status and
// every subscribe to a Handler, the service) and sends scheduling orders,
// node listings and log requests. gRPC stays here: what goes in and out
// are the service's types, and errors wrap internal/errdefs.
package link

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/internal/controller/service"
	"github.com/rik-org/rik/internal/errdefs"
	"github.com/rik-org/rik/internal/grpcutil"
)

// Handler is what the link reports to.
type Handler interface {
	// Subscribed is called, in its own goroutine, each time the scheduler
	// has subscribed the link: the orders it sends are answered with
	// statuses on the new stream, read meanwhile.
	Subscribed(ctx context.Context) error
	// Ingest applies one status, in the order received.
	Ingest(ctx context.Context, st service.Status)
}

// Defaults of Config.
const (
	DefaultCallTimeout = 3 * time.Second
	backoffMin         = 200 * time.Millisecond
	backoffMax         = 5 * time.Second
	// headerPatience bounds the wait for a scheduler's subscription
	// headers: one that sends none before its first status (not rik's) is
	// not waited for.
	headerPatience = 5 * time.Second
)

// Config configures a Link.
type Config struct {
	Target string      // host:port of the scheduler's controller port
	TLS    *tls.Config // the controller's client certificate; nil: plaintext
	// CallTimeout bounds each order and node listing; DefaultCallTimeout.
	CallTimeout time.Duration
	Logger      *slog.Logger // nil: discarded
}

// Link is the session with one scheduler.
type Link struct {
	cfg       Config
	log       *slog.Logger
	conn      *grpc.ClientConn
	client    controllerpb.ControllerClient
	connected atomic.Bool

	mu        sync.Mutex
	endStream context.CancelFunc // ends the current status stream
	again     bool               // subscribe again at once (Resubscribe)
}

// New makes the client of the scheduler at cfg.Target; nothing is dialled
// until used. Close releases it.
func New(cfg Config) (*Link, error) {
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	creds := insecure.NewCredentials()
	if cfg.TLS != nil {
		creds = credentials.NewTLS(cfg.TLS)
	}
	conn, err := grpc.NewClient(cfg.Target, grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(grpcutil.SchedulerKeepalive))
	if err != nil {
		return nil, fmt.Errorf("scheduler client for %s: %w", cfg.Target, err)
	}
	return &Link{cfg: cfg, log: cfg.Logger, conn: conn, client: controllerpb.NewControllerClient(conn)}, nil
}

// Close closes the connection.
func (l *Link) Close() { _ = l.conn.Close() }

// Target is the scheduler's address.
func (l *Link) Target() string { return l.cfg.Target }

// Connected reports whether the status stream is up.
func (l *Link) Connected() bool { return l.connected.Load() }

// Resubscribe ends the current status stream; Run subscribes again at
// once, and the scheduler replays the last status of every instance.
func (l *Link) Resubscribe() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.again = true
	if l.endStream != nil {
		l.endStream()
	}
}

// takeAgain reports (and clears) a resubscribe request.
func (l *Link) takeAgain() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	again := l.again
	l.again = false
	return again
}

// Run subscribes to status updates until ctx is done, handing them to h,
// and subscribes again with backoff when the stream breaks.
func (l *Link) Run(ctx context.Context, h Handler) {
	wait := backoffMin
	for failures := 0; ctx.Err() == nil; failures++ {
		started := time.Now()
		err := l.subscribe(ctx, h)
		l.connected.Store(false)
		if ctx.Err() != nil {
			return
		}
		if l.takeAgain() {
			l.log.Info("subscribing to the scheduler again", "scheduler", l.cfg.Target)
			failures = -1
			continue
		}
		if time.Since(started) > 10*time.Second {
			wait, failures = backoffMin, 0 // it was up for a while: a new outage
		}
		level := slog.LevelWarn
		if failures > 0 {
			level = slog.LevelDebug // still down; said so already
		}
		l.log.Log(ctx, level, "scheduler status stream ended, retrying", "scheduler", l.cfg.Target, "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(wait*2, backoffMax)
	}
}

// subscribe opens one status stream, has h re-send the desired state and
// hands it statuses until the stream breaks.
func (l *Link) subscribe(ctx context.Context, h Handler) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	l.mu.Lock()
	l.endStream = cancel
	l.again = false // this stream starts after any request
	l.mu.Unlock()
	stream, err := l.client.GetStatusUpdates(ctx, &emptypb.Empty{})
	if err != nil {
		return fmt.Errorf("subscribing to %s: %w", l.cfg.Target, err)
	}
	// The call returns before the scheduler has subscribed us; it sends
	// headers once it has. Orders re-sent before that would have their
	// answering statuses lost.
	if err := grpcutil.WaitHeader(ctx, stream, headerPatience); err != nil {
		return fmt.Errorf("subscribing to %s: %w", l.cfg.Target, err)
	}
	l.connected.Store(true)
	l.log.Info("subscribed to scheduler", "scheduler", l.cfg.Target)
	// Re-send while reading: the scheduler answers the orders on this
	// stream and drops a subscriber that does not keep up.
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() {
		if err := h.Subscribed(ctx); err != nil && ctx.Err() == nil {
			l.log.Warn("re-sending desired state", "err", err)
		}
	})
	for {
		msg, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("receiving statuses from %s: %w", l.cfg.Target, err)
		}
		if m := msg.GetInstance(); m != nil {
			h.Ingest(ctx, statusOf(m))
		}
	}
}

// Schedule sends one order, bounded by the call timeout.
func (l *Link) Schedule(ctx context.Context, o service.Order) error {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.CallTimeout)
	defer cancel()
	if _, err := l.client.ScheduleInstance(ctx, orderOf(o)); err != nil {
		return fmt.Errorf("scheduling %s %s: %w", actionOf(o.Action), o.InstanceName, errdefs.FromGRPC(err))
	}
	return nil
}

// Nodes lists the scheduler's nodes, bounded by the call timeout.
func (l *Link) Nodes(ctx context.Context) ([]api.Node, error) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.CallTimeout)
	defer cancel()
	list, err := l.client.ListNodes(ctx, &emptypb.Empty{})
	if err != nil {
		return nil, fmt.Errorf("listing nodes of %s: %w", l.cfg.Target, errdefs.FromGRPC(err))
	}
	nodes := make([]api.Node, 0, len(list.GetNodes()))
	for _, n := range list.GetNodes() {
		nodes = append(nodes, nodeOf(n))
	}
	return nodes, nil
}

// Logs opens the log stream of an instance; it ends with ctx.
func (l *Link) Logs(ctx context.Context, req service.LogRequest) (service.LogStream, error) {
	stream, err := l.client.GetLogs(ctx, logRequestOf(req))
	if err != nil {
		return nil, errdefs.FromGRPC(err)
	}
	return logStream{stream}, nil
}

// logStream reads log chunks; its errors are the scheduler's message,
// wrapping the domain error of its code.
type logStream struct {
	grpc.ServerStreamingClient[commonpb.LogChunk]
}

func (s logStream) Recv() (service.LogChunk, error) {
	c, err := s.ServerStreamingClient.Recv()
	if err != nil {
		return service.LogChunk{}, errdefs.FromGRPC(err)
	}
	return service.LogChunk{Data: c.GetData(), Error: c.GetError(), EOF: c.GetEof()}, nil
}
