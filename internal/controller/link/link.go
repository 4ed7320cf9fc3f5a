// Package link is the controller's session with the scheduler: it keeps
// the controller subscribed to the status stream (handing each status and
// every subscribe to a Handler, the service) and sends scheduling orders,
// node listings and log requests. gRPC stays here: what goes in and out
// are the service's types, and errors wrap internal/errdefs.
package link

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
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
	// Resume is where to resume the status stream (zero: replay all).
	Resume(ctx context.Context) service.Cursor
	// Subscribed is called, in its own goroutine, each time the scheduler
	// has subscribed the link: the orders it sends are answered with
	// statuses on the new stream, read meanwhile.
	Subscribed(ctx context.Context, sub service.Subscription) error
	// Ingest applies one status, in the order received for its instance
	// (statuses of different instances are ingested concurrently); false
	// when it was not stored (the stream position then stops moving until
	// the next subscribe).
	Ingest(ctx context.Context, st service.Status) bool
	// Stored reports that every status of the stream up to c was stored.
	Stored(c service.Cursor)
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
	cfg        Config
	log        *slog.Logger
	conn       *grpc.ClientConn
	client     controllerpb.ControllerClient
	connected  atomic.Bool
	legacy     atomic.Bool   // the scheduler has no SubscribeStatuses (not rik's)
	subscribes atomic.Uint64 // streams opened

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

// Subscribes counts the status streams the scheduler accepted: it stays
// put while the link stays subscribed.
func (l *Link) Subscribes() uint64 { return l.subscribes.Load() }

// Resubscribe ends the current status stream; Run subscribes again at
// once, resuming where the handler says.
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
	from := h.Resume(ctx)
	stream, epoch, head, err := l.open(ctx, from)
	if err != nil {
		return err
	}
	l.connected.Store(true)
	l.subscribes.Add(1)
	sub := service.Subscription{Epoch: epoch, Resumed: service.Resumable(from, epoch), Head: head}
	l.log.Info("subscribed to scheduler", "scheduler", l.cfg.Target, "epoch", epoch, "resumed", sub.Resumed, "after", from.Seq)
	start := service.Cursor{Epoch: epoch}
	if sub.Resumed {
		start = from
	}
	d := newDispatcher(ctx, h, start)
	defer d.close()
	// Re-send while reading: the scheduler answers the orders on this
	// stream.
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() {
		if err := h.Subscribed(ctx, sub); err != nil && ctx.Err() == nil {
			l.log.Warn("re-sending desired state", "err", err)
		}
	})
	for {
		msg, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("receiving statuses from %s: %w", l.cfg.Target, err)
		}
		if m := msg.GetInstance(); m != nil {
			st := statusOf(m)
			st.At = service.Cursor{Epoch: epoch, Seq: msg.GetSeq()}
			d.dispatch(st)
		}
	}
}

// open opens the status stream resuming at from (the plain RIK call on a
// scheduler without SubscribeStatuses) and waits until the scheduler has
// subscribed it; it returns the scheduler's run ("" when not numbered) and
// where its replay ends.
func (l *Link) open(ctx context.Context, from service.Cursor) (_ grpc.ServerStreamingClient[commonpb.WorkerStatus], epoch string, head uint64, _ error) {
	var stream grpc.ServerStreamingClient[commonpb.WorkerStatus]
	var err error
	if l.legacy.Load() {
		stream, err = l.client.GetStatusUpdates(ctx, &emptypb.Empty{})
	} else {
		stream, err = l.client.SubscribeStatuses(ctx, &controllerpb.StatusCursor{Epoch: from.Epoch, Seq: from.Seq})
	}
	if err != nil {
		return nil, "", 0, fmt.Errorf("subscribing to %s: %w", l.cfg.Target, err)
	}
	// The call returns before the scheduler has subscribed us; it sends
	// headers once it has. Orders re-sent before that would have their
	// answering statuses lost.
	md, err := grpcutil.WaitHeaderMD(ctx, stream, headerPatience)
	if err != nil {
		return nil, "", 0, fmt.Errorf("subscribing to %s: %w", l.cfg.Target, err)
	}
	if md == nil && !l.legacy.Load() {
		// No headers: the call failed. A scheduler without the call gets
		// RIK's at once.
		_, err := stream.Recv()
		if status.Code(err) == codes.Unimplemented {
			l.log.Info("scheduler without resumable status streams: subscribing with GetStatusUpdates", "scheduler", l.cfg.Target)
			l.legacy.Store(true)
			l.mu.Lock()
			l.again = true
			l.mu.Unlock()
		}
		if err == nil {
			err = errors.New("no subscription headers")
		}
		return nil, "", 0, fmt.Errorf("subscribing to %s: %w", l.cfg.Target, err)
	}
	if v := md.Get(grpcutil.EpochHeader); len(v) == 1 {
		epoch = v[0]
	}
	if v := md.Get(grpcutil.HeadHeader); len(v) == 1 {
		head, _ = strconv.ParseUint(v[0], 10, 64) // 0 when not a number: nothing awaited
	}
	return stream, epoch, head, nil
}

// Unknown returns, of ids, those the scheduler does not have.
func (l *Link) Unknown(ctx context.Context, ids []string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.CallTimeout)
	defer cancel()
	out, err := l.client.UnknownInstances(ctx, &controllerpb.InstanceIds{Ids: ids})
	if err != nil {
		return nil, fmt.Errorf("asking %s which instances it lacks: %w", l.cfg.Target, errdefs.FromGRPC(err))
	}
	return out.GetIds(), nil
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

// SetNetworks sends the pod subnets of the nodes, bounded by the call
// timeout.
func (l *Link) SetNetworks(ctx context.Context, cluster netip.Prefix, subnets map[string]netip.Prefix) error {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.CallTimeout)
	defer cancel()
	m := &controllerpb.NodeNetworks{ClusterCidr: cluster.String()}
	for _, name := range slices.Sorted(maps.Keys(subnets)) {
		m.Nodes = append(m.Nodes, &controllerpb.NodeNetwork{Name: name, PodSubnet: subnets[name].String()})
	}
	if _, err := l.client.SetNodeNetworks(ctx, m); err != nil {
		return fmt.Errorf("sending pod subnets to %s: %w", l.cfg.Target, errdefs.FromGRPC(err))
	}
	return nil
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
