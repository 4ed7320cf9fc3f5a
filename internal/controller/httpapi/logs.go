package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/rik-org/rik/internal/controller/service"
	"github.com/rik-org/rik/internal/errdefs"
)

// firstChunkPatience is how long the logs route waits for the first chunk
// before sending its headers: errors (unknown instance, node down) come
// with it, but a quiet followed log must not hold the headers back long.
const firstChunkPatience = time.Second

// logRequest reads the query of instances.logs.
func logRequest(r *http.Request) (service.LogRequest, error) {
	q := r.URL.Query()
	req := service.LogRequest{Container: q.Get("container")}
	switch q.Get("follow") {
	case "", "false", "0":
	case "true", "1":
		req.Follow = true
	default:
		return req, errdefs.Errorf(errdefs.ErrInvalidArgument, "follow: must be true or false")
	}
	if v := q.Get("tail"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || strconv.FormatInt(n, 10) != v {
			return req, errdefs.Errorf(errdefs.ErrInvalidArgument, "tail: must be a non-negative integer")
		}
		req.Tail = n
	}
	return req, nil
}

// logItem is one piece of a log stream, or the error ending it (io.EOF for
// a clean end).
type logItem struct {
	data []byte
	err  error
}

// pumpLogs receives from logs until the stream ends (the last item carries
// the error) or ctx is done.
func pumpLogs(ctx context.Context, logs *service.Logs, out chan<- logItem) {
	for {
		data, err := logs.Recv()
		select {
		case out <- logItem{data: data, err: err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

func (a *API) instanceLogs(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := a.streamContext(r)
	defer cancel()
	req, err := logRequest(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	logs, err := a.svc.Logs(ctx, r.PathValue("id"), req)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	items := make(chan logItem, 16)
	go pumpLogs(ctx, logs, items)

	var first *logItem
	timer := time.NewTimer(firstChunkPatience)
	defer timer.Stop()
	select {
	case it := <-items:
		if it.err != nil && it.err != io.EOF {
			a.fail(w, r, it.err)
			return
		}
		first = &it
	case <-timer.C:
	case <-ctx.Done():
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	a.streamLogs(ctx, w, logs.Instance.Name, first, items)
}

// streamLogs writes the log items (first, if not nil, then those from
// items) as they come, until the stream ends or ctx is done. An error
// after the answer started is told at its end.
func (a *API) streamLogs(ctx context.Context, w http.ResponseWriter, name string, first *logItem, items <-chan logItem) {
	rc := http.NewResponseController(w)
	if a.writeChunk(w, rc, nil) != nil {
		return
	}
	for {
		var it logItem
		if first != nil {
			it, first = *first, nil
		} else {
			select {
			case it = <-items:
			case <-ctx.Done():
				return
			}
		}
		if len(it.data) > 0 && a.writeChunk(w, rc, it.data) != nil {
			return
		}
		if it.err == nil {
			continue
		}
		if !errors.Is(it.err, io.EOF) && ctx.Err() == nil {
			a.log.Warn("log stream broken", "instance", name, "err", it.err)
			_ = a.writeChunk(w, rc, fmt.Appendf(nil, "\n[log stream error: %s]\n", it.err))
		}
		return
	}
}
