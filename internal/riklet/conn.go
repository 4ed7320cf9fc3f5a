package riklet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/workerpb"
	"github.com/rik-org/rik/internal/grpcutil"
	"github.com/rik-org/rik/internal/riklet/runtime"
)

// maxLogChunk is the largest LogChunk payload.
const maxLogChunk = 32 << 10

// connectLoop registers with the scheduler and serves it until ctx is done,
// re-registering (with backoff) whenever the order stream breaks.
func (a *agent) connectLoop(ctx context.Context, client workerpb.WorkerClient) {
	a.retryLoop(ctx, "scheduler connection failed, retrying",
		func(ctx context.Context) error { return a.session(ctx, client) }, nil)
}

// retryLoop runs fn until ctx is done, again after a backoff delay each
// time it returns (logging msg and its error), quickly again when it
// worked for a while. It returns early when stop (if not nil) reports
// true for fn's error.
func (a *agent) retryLoop(ctx context.Context, msg string, fn func(context.Context) error, stop func(error) bool) {
	b := backoff{min: a.k.connMin, max: a.k.connMax}
	for {
		began := time.Now()
		err := fn(ctx)
		if ctx.Err() != nil {
			return
		}
		if stop != nil && stop(err) {
			return
		}
		if time.Since(began) > a.k.connMax {
			b.reset() // it worked for a while: retry quickly
		}
		d := b.next()
		a.log.Warn(msg, "error", err, "in", d.Round(time.Millisecond))
		if !sleep(ctx.Done(), d) {
			return
		}
	}
}

// session is one registration: it receives orders until the stream breaks,
// while keeping a status stream and a log stream open.
func (a *agent) session(ctx context.Context, client workerpb.WorkerClient) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reg := a.registration()
	stream, err := client.Register(sctx, reg)
	if err != nil {
		return fmt.Errorf("registering: %w", err)
	}
	// The scheduler sends the headers once it recorded the node; statuses
	// sent before would be dropped.
	md, err := grpcutil.WaitHeaderMD(sctx, stream, a.k.connMax)
	if err != nil {
		return fmt.Errorf("registering: %w", err)
	}
	a.setHeartbeat(md.Get(grpcutil.HeartbeatHeader))
	a.log.Info("registered with scheduler", "kinds", reg.Kinds, "instances", len(reg.Instances))
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a.statusLoop(sctx, client) }()
	go func() { defer wg.Done(); a.logsLoop(sctx, client) }()
	defer wg.Wait()
	defer cancel() // runs before wg.Wait
	for {
		o, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("receiving orders: scheduler closed the stream")
			}
			return fmt.Errorf("receiving orders: %w", err)
		}
		a.dispatch(o)
	}
}

// registration describes the node and what it runs now.
func (a *agent) registration() *commonpb.WorkerRegistration {
	s, err := a.host.sample()
	if err != nil {
		a.log.Warn("reading node capacity", "error", err)
	}
	a.mu.Lock()
	instances := a.snapshotLocked()
	a.mu.Unlock()
	return &commonpb.WorkerRegistration{
		Hostname:  a.cfg.Hostname,
		Capacity:  s.Capacity,
		Labels:    a.cfg.Labels,
		Kinds:     a.kinds,
		Instances: instances,
		Address:   hostAddress(),
		Version:   Version,
	}
}

// heartbeat is the node's periodic metric.
func (a *agent) heartbeat() *commonpb.WorkerStatus {
	s, err := a.host.sample()
	if err != nil {
		a.log.Debug("reading node usage", "error", err)
	}
	return &commonpb.WorkerStatus{
		Identifier: a.cfg.Hostname,
		Status: &commonpb.WorkerStatus_Worker{Worker: &commonpb.WorkerMetric{
			Status:   commonpb.ResourceStatus_RUNNING,
			Metrics:  rikMetrics(s),
			Capacity: s.Capacity,
			Usage:    s.Usage,
			Load1:    s.Load1,
			Kinds:    a.kinds,
		}},
	}
}

// setHeartbeat applies the longest heartbeat interval the scheduler allows
// (its registration header; none: the configured one stands).
func (a *agent) setHeartbeat(allowed []string) {
	every := a.cfg.HeartbeatInterval
	if len(allowed) > 0 {
		d, err := time.ParseDuration(allowed[0])
		switch {
		case err != nil || d <= 0:
			a.log.Warn("scheduler sent an invalid heartbeat interval: ignored", "value", allowed[0])
		case d < every:
			if time.Duration(a.heartbeatEvery.Load()) == d {
				every = d
				break // said so already
			}
			a.log.Warn("heartbeat interval too long for the scheduler's node timeout: using the scheduler's",
				"configured", every, "used", d)
			every = d
		}
	}
	a.heartbeatEvery.Store(int64(every))
}

// heartbeatInterval is how often heartbeats are sent.
func (a *agent) heartbeatInterval() time.Duration {
	if d := time.Duration(a.heartbeatEvery.Load()); d > 0 {
		return d
	}
	return a.cfg.HeartbeatInterval
}

// statusLoop keeps a status stream open until ctx is done.
func (a *agent) statusLoop(ctx context.Context, client workerpb.WorkerClient) {
	a.retryLoop(ctx, "status stream broken, reopening",
		func(ctx context.Context) error { return a.sendStatuses(ctx, client) }, nil)
}

// sendStatuses opens a status stream, re-sends the latest status of every
// instance, then sends queued statuses as they come and a heartbeat every
// HeartbeatInterval. A status leaves the queue once sent.
func (a *agent) sendStatuses(ctx context.Context, client workerpb.WorkerClient) error {
	st, err := client.SendStatusUpdates(ctx)
	if err != nil {
		return fmt.Errorf("opening status stream: %w", err)
	}
	fail := func(err error) error {
		if errors.Is(err, io.EOF) {
			if _, rerr := st.CloseAndRecv(); rerr != nil {
				err = rerr
			}
		}
		return fmt.Errorf("sending status: %w", err)
	}
	a.resend()
	if err := st.Send(a.heartbeat()); err != nil {
		return fail(err)
	}
	tick := time.NewTicker(a.heartbeatInterval())
	defer tick.Stop()
	for {
		for {
			m, ok := a.queue.peek()
			if !ok {
				break
			}
			ws := &commonpb.WorkerStatus{Identifier: a.cfg.Hostname, Status: &commonpb.WorkerStatus_Instance{Instance: m}}
			if err := st.Send(ws); err != nil {
				return fail(err)
			}
			a.queue.pop(m)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.queue.ready:
		case <-tick.C:
			if err := st.Send(a.heartbeat()); err != nil {
				return fail(err)
			}
		}
	}
}

// logsLoop keeps the log stream open until ctx is done. A scheduler that
// does not serve logs is not asked again during this session.
func (a *agent) logsLoop(ctx context.Context, client workerpb.WorkerClient) {
	a.retryLoop(ctx, "log stream broken, reopening",
		func(ctx context.Context) error { return a.serveLogs(ctx, client) },
		func(err error) bool {
			if status.Code(err) != codes.Unimplemented {
				return false
			}
			a.log.Info("scheduler does not serve logs")
			return true
		})
}

// serveLogs opens a log stream and answers its requests concurrently.
func (a *agent) serveLogs(ctx context.Context, client workerpb.WorkerClient) error {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := client.ServeLogs(lctx)
	if err != nil {
		return fmt.Errorf("opening log stream: %w", err)
	}
	var sendMu sync.Mutex
	send := func(c *commonpb.LogChunk) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return st.Send(c)
	}
	if err := send(&commonpb.LogChunk{RequestId: a.cfg.Hostname}); err != nil {
		_, rerr := st.Recv()
		return fmt.Errorf("opening log stream: %w", errors.Join(err, rerr))
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // runs before wg.Wait
	reqs := logRequests{cancels: map[string]context.CancelFunc{}}
	for {
		req, err := st.Recv()
		if err != nil {
			return fmt.Errorf("receiving log requests: %w", err)
		}
		rid := req.GetRequestId()
		if req.GetCancel() {
			if reqs.cancel(rid) {
				a.log.Debug("log request cancelled", "request", rid)
			}
			continue
		}
		rctx, ok := reqs.start(lctx, rid)
		if !ok {
			a.log.Debug("duplicate log request ignored", "request", rid)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer reqs.cancel(rid)
			a.serveLog(rctx, req, send)
		}()
	}
}

// logRequests tracks the log requests being served, to cancel them.
type logRequests struct {
	mu      sync.Mutex
	cancels map[string]context.CancelFunc
}

// start returns the context of a new request rid, or false if rid is
// already being served.
func (r *logRequests) start(ctx context.Context, rid string) (context.Context, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.cancels[rid]; dup {
		return nil, false
	}
	ctx, cancel := context.WithCancel(ctx)
	r.cancels[rid] = cancel
	return ctx, true
}

// cancel cancels request rid and forgets it; it reports whether it was
// being served.
func (r *logRequests) cancel(rid string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.cancels[rid]
	if ok {
		c()
		delete(r.cancels, rid)
	}
	return ok
}

// serveLog answers one log request: chunks, then an eof chunk carrying the
// error if any.
func (a *agent) serveLog(ctx context.Context, req *commonpb.LogRequest, send func(*commonpb.LogChunk) error) {
	rid := req.GetRequestId()
	err := a.writeLogs(ctx, req, &chunkWriter{requestID: rid, send: send})
	end := &commonpb.LogChunk{RequestId: rid, Eof: true}
	if err != nil {
		end.Error = err.Error()
	}
	if serr := send(end); serr != nil {
		a.log.Debug("sending end of logs", "request", rid, "error", serr)
	}
}

func (a *agent) writeLogs(ctx context.Context, req *commonpb.LogRequest, w io.Writer) error {
	e, ok := a.get(req.GetInstanceId())
	if !ok {
		return runtime.ErrNotFound
	}
	rt := a.runtimes[kindOf(e.Kind)]
	if rt == nil {
		return errors.New(noRuntimeMessage(e.Kind))
	}
	inst, _ := a.instance(e)
	tail := req.GetTail()
	if tail < 0 || tail > 1<<31-1 {
		tail = 0
	}
	return rt.Logs(ctx, inst, runtime.LogOptions{Container: req.GetContainer(), Follow: req.GetFollow(), Tail: int(tail)}, w)
}

// chunkWriter sends what is written to it as LogChunks of at most
// maxLogChunk bytes.
type chunkWriter struct {
	requestID string
	send      func(*commonpb.LogChunk) error
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		size := min(len(p), maxLogChunk)
		data := append([]byte(nil), p[:size]...)
		if err := w.send(&commonpb.LogChunk{RequestId: w.requestID, Data: data}); err != nil {
			return n, fmt.Errorf("sending logs: %w", err)
		}
		n += size
		p = p[size:]
	}
	return n, nil
}
