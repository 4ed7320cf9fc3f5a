package rikctl

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/workload"
)

// restartingEvents is an event stream whose controller restarts: each
// connection gets the next script (the chunks after the query), then the
// stream ends; the last connection is held open.
type restartingEvents struct {
	mu      sync.Mutex
	scripts []func(since string) string
	queries []string // since and kinds of each connection
	held    chan struct{}
}

func (e *restartingEvents) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/api/v0/events":
	case "/api/v0/instances.list": // the workloads' READY column
		fmt.Fprint(w, "[]")
		return
	default:
		http.NotFound(w, r)
		return
	}
	e.mu.Lock()
	n := len(e.queries)
	e.queries = append(e.queries, r.URL.Query().Get("since")+" "+r.URL.Query().Get("kinds"))
	e.mu.Unlock()
	if n >= len(e.scripts) {
		http.Error(w, `{"error":"no more"}`, http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	fmt.Fprint(w, ": connected\n\n"+e.scripts[n](r.URL.Query().Get("since")))
	w.(http.Flusher).Flush()
	if n == len(e.scripts)-1 {
		close(e.held)
		<-r.Context().Done()
	}
}

func sse(id int64, name string, v any) string {
	b, _ := json.Marshal(v)
	return fmt.Sprintf("id: %d\nevent: %s\ndata: %s\n\n", id, name, b)
}

// get -w instances: the first listing, changes as aligned rows, and after
// the stream breaks (a controller restart) it resumes from the last id:
// what changed meanwhile is printed once, what went is TERMINATED, and no
// row is printed twice.
func TestWatchInstancesResumes(t *testing.T) {
	web, fn := fixtureInstances()[0], fixtureInstances()[1]
	running := web
	web.Value.Status = workload.StatusPending
	other := web
	other.ID, other.Name, other.Value.ID, other.Value.Name, other.Value.WorkloadName = "o-uuid", "other-1", "o-uuid", "other-1", "other"
	sync := func(ids ...string) string { return sse(0, api.EventSync, api.Sync{Instances: ids}) }
	ev := &restartingEvents{held: make(chan struct{}), scripts: []func(string) string{
		func(string) string { // since=0: the records, then live
			return sse(0, "instance", web) + sse(0, "instance", fn) + sse(0, "instance", other) +
				strings.Replace(sync(web.ID, fn.ID, other.ID), "id: 0", "id: 5", 1) +
				sse(6, "instance", running) + sse(7, "node", api.Item[api.Node]{ID: "n"})
		},
		func(string) string { // a restart: a resync from 7
			return sse(7, "instance", running) + // unchanged: not printed again
				strings.Replace(sync(running.ID, fn.ID), "id: 0", "id: 9", 1) // other went
		},
		func(string) string { return "" }, // restarted again, nothing new
	}}
	srv := httptest.NewServer(ev)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-ev.held
		time.Sleep(100 * time.Millisecond) // let the last events be printed
		cancel()
	}()
	var out, errOut strings.Builder
	code := Run(ctx, []string{"--server", srv.URL, "get", "instances", "-w"}, Env{Stdout: &out, Stderr: &errOut, Now: func() time.Time { return testNow }})
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	want := "" +
		"NAME        WORKLOAD   STATUS       READY   NODE     IP          PORTS                     RESTARTS   AGE\n" +
		"fn-abcde    w-2        FAILED       false   <none>   <none>      <none>                    0          45s\n" +
		"other-1     other      PENDING      true    node-1   10.62.0.1   8080->80/TCP,53->53/UDP   2          3h\n" +
		"web-x1y2z   web        PENDING      true    node-1   10.62.0.1   8080->80/TCP,53->53/UDP   2          3h\n" +
		"web-x1y2z   web        RUNNING      true    node-1   10.62.0.1   8080->80/TCP,53->53/UDP   2          3h\n" +
		"other-1     other      TERMINATED   true    node-1   10.62.0.1   8080->80/TCP,53->53/UDP   2          3h\n"
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"0 instance", "7 instance", "9 instance"}, ev.queries); diff != "" {
		t.Errorf("connections (since, kinds) (-want +got):\n%s", diff)
	}
	if got := strings.Count(errOut.String(), "reconnecting"); got != 2 {
		t.Errorf("stderr: %q, want two reconnections said", errOut.String())
	}
}

// A removed workload or node shows as its row, named "(deleted)".
func TestWatchWorkloadsAndNodes(t *testing.T) {
	wl := WorkloadItem{ID: "w-1", Name: "web", Value: workload.Workload{Name: "web", Kind: workload.KindPod, Replicas: 1,
		Spec: workload.Spec{Containers: []workload.Container{{Name: "c", Image: "nginx:1"}}}}}
	nd := api.Item[api.Node]{ID: "node-1", Name: "node-1", Value: api.Node{Name: "node-1", Status: "Ready"}}
	notReady := nd
	notReady.Value.Status = "NotReady"
	for _, c := range []struct {
		args   []string
		script string
		want   string
	}{
		{[]string{"get", "workloads", "-w"},
			sse(0, "workload", wl) + sse(3, "sync", api.Sync{Workloads: []string{"w-1"}}) + sse(4, "workload.deleted", wl),
			"NAME            KIND   READY   UP-TO-DATE   REVISION   MANAGED   SOURCE    PORTS\n" +
				"web             pod    0/0     -            -          no        nginx:1   <none>\n" +
				"web (deleted)   pod    0/0     -            -          no        nginx:1   <none>\n"},
		{[]string{"get", "nodes", "-w"},
			sse(0, "node", nd) + sse(3, "sync", api.Sync{Nodes: []string{"node-1"}}) + sse(4, "node", nd) +
				sse(5, "node", notReady) + sse(6, "node.deleted", notReady),
			"NAME               STATUS     KINDS    CPU     MEMORY    INSTANCES   LAST SEEN\n" +
				"node-1             Ready      <none>   0m/0m   0Mi/0Mi   0           <unknown>\n" +
				"node-1             NotReady   <none>   0m/0m   0Mi/0Mi   0           <unknown>\n" +
				"node-1 (deleted)   NotReady   <none>   0m/0m   0Mi/0Mi   0           <unknown>\n"},
	} {
		t.Run(c.args[1], func(t *testing.T) {
			ev := &restartingEvents{held: make(chan struct{}), scripts: []func(string) string{func(string) string { return c.script }}}
			srv := httptest.NewServer(ev)
			defer srv.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() { <-ev.held; time.Sleep(100 * time.Millisecond); cancel() }()
			var out, errOut strings.Builder
			if code := Run(ctx, append([]string{"--server", srv.URL}, c.args...), Env{Stdout: &out, Stderr: &errOut, Now: func() time.Time { return testNow }}); code != 0 {
				t.Fatalf("exit %d: %s", code, errOut.String())
			}
			if diff := cmp.Diff(c.want, out.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
		})
	}
}

// A refused token ends the watch at once: reconnecting cannot fix it.
func TestWatchStopsOnClientErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":"no"}`, http.StatusForbidden)
	}))
	defer srv.Close()
	err := NewClient(srv.URL, nil).WatchEvents(context.Background(), WatchOptions{}, func(Event) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "no") {
		t.Errorf("WatchEvents = %v, want the 403", err)
	}
}
