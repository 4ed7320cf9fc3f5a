package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/controller/service"
	"github.com/rik-org/rik/internal/errdefs"
)

// events streams the changes of instances, workloads and nodes as
// server-sent events (see api.Event*), each with its id: the store
// revision of the change. ": connected" is sent once subscribed, with the
// stream's position as id. A client resuming (Last-Event-ID, or ?since=)
// gets what it missed: the events still held, or else a resync (every
// record changed since, then a sync event naming all that exist); since=0
// asks for every record first. ?kinds=instance,node narrows the stream. A
// subscriber too slow to keep up is dropped (the stream ends): it resumes.
func (a *API) events(w http.ResponseWriter, r *http.Request) {
	since, kinds, err := eventsQuery(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ctx, cancel := a.streamContext(r)
	defer cancel()
	rc := http.NewResponseController(w)
	sub, err := a.svc.Subscribe(ctx, since, kinds)
	if err != nil {
		return // the client went, or the server stops
	}
	defer sub.Cancel()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// Once subscribed: with nothing to catch up on, the client is at the
	// stream's head.
	chunk := []byte(": connected\n")
	if sub.Sync == nil && len(sub.Backlog) == 0 {
		chunk = fmt.Appendf(chunk, "id: %d\n", sub.Head)
	}
	chunk = append(chunk, '\n')
	// A resync's records keep the client's position until its sync event.
	backlogID := func(ev service.Event) int64 { return ev.ID }
	if sub.Sync != nil {
		backlogID = func(service.Event) int64 { return max(since, 0) }
	}
	for _, ev := range sub.Backlog {
		chunk = appendEvent(chunk, r, ev, backlogID(ev))
	}
	if sub.Sync != nil {
		data, _ := json.Marshal(sub.Sync)
		chunk = fmt.Appendf(chunk, "id: %d\nevent: %s\ndata: %s\n\n", sub.SyncID, api.EventSync, data)
	}
	if a.writeChunk(w, rc, chunk) != nil {
		return
	}
	a.follow(ctx, w, r, rc, sub)
}

// follow writes sub's live events, and a keepalive comment when quiet,
// until the client goes, the server stops or sub is dropped.
func (a *API) follow(ctx context.Context, w http.ResponseWriter, r *http.Request, rc *http.ResponseController, sub service.EventStream) {
	tick := time.NewTicker(a.cfg.KeepaliveEvery)
	defer tick.Stop()
	for {
		var chunk []byte
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-sub.C:
			if !ok {
				return // too slow, or the service re-listed: the client resumes
			}
			chunk = appendEvent(nil, r, ev, ev.ID)
		case <-tick.C:
			chunk = []byte(": keepalive\n\n")
		}
		if a.writeChunk(w, rc, chunk) != nil {
			return
		}
	}
}

// appendEvent appends ev as a server-sent event with id; workloads are
// redacted for viewers.
func appendEvent(b []byte, r *http.Request, ev service.Event, id int64) []byte {
	item := ev.Item
	if rec, ok := item.(service.WorkloadRecord); ok {
		item = showWorkload(r, rec)
	}
	data, err := json.Marshal(item)
	if err != nil {
		return b
	}
	return fmt.Appendf(b, "id: %d\nevent: %s\ndata: %s\n\n", id, ev.Name(), data)
}

// eventsQuery reads where a client resumes from (-1: nowhere) and the
// kinds it follows.
func eventsQuery(r *http.Request) (since int64, kinds []string, err error) {
	since = -1
	q := r.URL.Query()
	if v := firstNonEmpty(r.Header.Get("Last-Event-ID"), q.Get("since")); v != "" {
		since, err = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || since < 0 {
			return 0, nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "since: %q is no event id", v)
		}
	}
	for _, k := range strings.Split(q.Get("kinds"), ",") {
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		if !slices.Contains(api.EventKinds, k) {
			return 0, nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "kinds: unknown kind %q (want %s)", k, strings.Join(api.EventKinds, ", "))
		}
		kinds = append(kinds, k)
	}
	return since, kinds, nil
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// eventsList answers the kept history of one object:
// ?kind=workload|instance|node&name=NAME, oldest first.
func (a *API) eventsList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	evs, err := a.svc.Events(r.Context(), q.Get("kind"), q.Get("name"))
	a.reply(w, r, http.StatusOK, evs, err)
}
