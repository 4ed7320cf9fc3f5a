package controller

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// idEvent is one server-sent event with its id.
type idEvent struct{ id, name, data string }

// openEvents opens the event stream with header Last-Event-ID (when not
// "") and query, and returns its events (comments as name "comment").
func (e *env) openEvents(t *testing.T, ctx context.Context, lastID, query string) <-chan idEvent {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.http.URL+"/api/v0/events"+query, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := e.http.Client().Do(e.auth(req))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 {
		t.Fatalf("events%s: %d", query, resp.StatusCode)
	}
	ch := make(chan idEvent, 100)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		var ev idEvent
		for sc.Scan() {
			line := sc.Text()
			field, value, _ := strings.Cut(line, ": ")
			switch {
			case line == "":
				if ev.name != "" {
					ch <- ev
				}
				ev = idEvent{}
			case strings.HasPrefix(line, ":"):
				ev.name = "comment"
			case field == "id":
				ev.id = value
			case field == "event":
				ev.name = value
			case field == "data":
				ev.data = value
			}
		}
	}()
	return ch
}

// next returns the next event named one of names.
func nextNamed(t *testing.T, ch <-chan idEvent, names ...string) idEvent {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("stream ended waiting for %v", names)
			}
			for _, n := range names {
				if ev.name == n {
					return ev
				}
			}
		case <-timeout:
			t.Fatalf("no %v event", names)
		}
	}
}

// Every event has an id; a client resuming with Last-Event-ID gets what
// followed it, with since=0 every record then a sync event; a bad id is
// refused.
func TestEventsResume(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	live := e.openEvents(t, ctx, "", "?kinds=workload,instance")
	if ev := nextNamed(t, live, "comment"); ev.id == "" {
		t.Errorf("connected without the stream's position: %+v", ev)
	}
	wl := e.createWorkload(podDef("web"))
	created := nextNamed(t, live, "workload")
	in := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	inEv := nextNamed(t, live, "instance")
	if a, b := atoi(t, created.id), atoi(t, inEv.id); a <= 0 || b <= a || !strings.Contains(inEv.data, in.ID) {
		t.Fatalf("events %+v then %+v", created, inEv)
	}

	resumed := e.openEvents(t, ctx, created.id, "?kinds=instance,workload")
	if ev := nextNamed(t, resumed, "instance", "workload", "sync"); ev != inEv {
		t.Errorf("resumed from %s: %+v, want %+v", created.id, ev, inEv)
	}

	all := e.openEvents(t, ctx, "", "?since=0&kinds=workload")
	if ev := nextNamed(t, all, "workload", "sync"); ev.name != "workload" || ev.id != "0" || !strings.Contains(ev.data, wl.ID) {
		t.Errorf("since=0: %+v, want the workload", ev)
	}
	if ev := nextNamed(t, all, "workload", "sync"); ev.name != "sync" || ev.data != `{"workloads":["`+wl.ID+`"]}` {
		t.Errorf("since=0 then %+v, want the sync event", ev)
	}

	for _, q := range []string{"?since=x", "?kinds=pods"} {
		if r := e.do("GET", "/api/v0/events"+q, nil); r.code != http.StatusBadRequest {
			t.Errorf("events%s: %d, want 400", q, r.code)
		}
	}
}

func atoi(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("event id %q: %v", s, err)
	}
	return n
}
