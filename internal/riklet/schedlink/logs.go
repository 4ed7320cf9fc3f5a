package schedlink

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/workerpb"
	"github.com/rik-org/rik/internal/riklet/runtime"
)

// maxLogChunk is the largest LogChunk payload.
const maxLogChunk = 32 << 10

// logsLoop keeps the log stream open until ctx is done. A scheduler that
// does not serve logs is not asked again during this session.
func (l *Link) logsLoop(ctx context.Context, client workerpb.WorkerClient) {
	l.retryLoop(ctx, "log stream broken, reopening",
		func(ctx context.Context) error { return l.serveLogs(ctx, client) },
		func(err error) bool {
			if status.Code(err) != codes.Unimplemented {
				return false
			}
			l.log.Info("scheduler does not serve logs")
			return true
		})
}

// serveLogs opens a log stream and answers its requests concurrently.
func (l *Link) serveLogs(ctx context.Context, client workerpb.WorkerClient) error {
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
	if err := send(&commonpb.LogChunk{RequestId: l.cfg.Hostname}); err != nil {
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
				l.log.Debug("log request cancelled", "request", rid)
			}
			continue
		}
		rctx, ok := reqs.start(lctx, rid)
		if !ok {
			l.log.Debug("duplicate log request ignored", "request", rid)
			continue
		}
		wg.Go(func() {
			defer reqs.cancel(rid)
			l.serveLog(rctx, req, send)
		})
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
func (l *Link) serveLog(ctx context.Context, req *commonpb.LogRequest, send func(*commonpb.LogChunk) error) {
	rid := req.GetRequestId()
	tail := req.GetTail()
	if tail < 0 || tail > 1<<31-1 {
		tail = 0
	}
	opts := runtime.LogOptions{Container: req.GetContainer(), Follow: req.GetFollow(), Tail: int(tail)}
	err := l.sup.Logs(ctx, req.GetInstanceId(), opts, &chunkWriter{requestID: rid, send: send})
	end := &commonpb.LogChunk{RequestId: rid, Eof: true}
	if err != nil {
		end.Error = err.Error()
	}
	if serr := send(end); serr != nil {
		l.log.Debug("sending end of logs", "request", rid, "error", serr)
	}
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
