package rikctl

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/workload"
)

// lifecycleAPI serves one instance whose status moves one step along
// steps on each read, then is removed once deleted; and its events.
type lifecycleAPI struct {
	mu      sync.Mutex
	steps   []workload.Instance
	reads   int
	deleted bool
	gone    int // reads after the delete before it is removed
	queries []string
}

func (l *lifecycleAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	route := strings.TrimPrefix(r.URL.Path, "/api/v0/")
	switch {
	case r.Method == "POST" && route == "instances.create":
		reply(w, 201, []InstanceItem{{ID: "id-1", Name: "web-1", Value: l.steps[0]}})
	case r.Method == "POST" && route == "instances.delete":
		l.deleted = true
		w.WriteHeader(204)
	case route == "instances.get/web-1":
		if l.deleted && l.gone == 0 {
			apiError(w, 404, "instance %q: not found", "web-1")
			return
		}
		v := l.steps[min(l.reads, len(l.steps)-1)]
		if l.deleted {
			l.gone--
			v.Status, v.DeleteRequested = workload.StatusDestroying, true
		}
		l.reads++
		reply(w, 200, InstanceItem{ID: "id-1", Name: "web-1", Value: v})
	case route == "events.list":
		l.queries = append(l.queries, r.URL.RawQuery)
		reply(w, 200, []api.Event{
			{Time: testNow.Add(-time.Minute), Kind: "instance", Name: "web-1", Reason: api.EventScheduled, Message: "on n1"},
			{Time: testNow.Add(-10 * time.Second), Kind: "instance", Name: "web-1", Reason: api.EventRestarting, Message: "liveness probe failed", Count: 3},
		})
	default:
		apiError(w, 404, "no route %s", route)
	}
}

func TestCreateInstanceWait(t *testing.T) {
	code := 2
	for _, tc := range []struct {
		name  string
		steps []workload.Status
		last  workload.Instance
		want  string // error; "" for success
	}{
		{"reaches RUNNING", []workload.Status{workload.StatusPending, workload.StatusCreating}, workload.Instance{Status: workload.StatusRunning}, ""},
		{"fails", []workload.Status{workload.StatusPending}, workload.Instance{Status: workload.StatusFailed, Reason: "ImagePullFailed", Message: "manifest unknown"},
			"instance/web-1 is FAILED: ImagePullFailed: manifest unknown"},
		{"exits", nil, workload.Instance{Status: workload.StatusTerminated, Reason: "Completed", ExitCode: &code},
			"instance/web-1 is TERMINATED: Completed (exit code 2)"},
		{"times out", []workload.Status{workload.StatusPending}, workload.Instance{Status: workload.StatusPending, Reason: "no node fits"},
			"timed out after 1s waiting for instance/web-1 to be RUNNING (it is PENDING: no node fits)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &lifecycleAPI{}
			for _, st := range tc.steps {
				l.steps = append(l.steps, workload.Instance{Status: st})
			}
			l.steps = append(l.steps, tc.last)
			srv := httptest.NewServer(l)
			defer srv.Close()
			timeout := "30s"
			if tc.name == "times out" {
				timeout = "1s"
			}
			r := runAt(t, srv, "create", "instance", "--workload-id", "web", "--wait", "--timeout", timeout)
			if tc.want == "" {
				wantOK(t, r)
				return
			}
			wantErr(t, r, tc.want)
		})
	}
}

func TestDeleteInstanceWait(t *testing.T) {
	l := &lifecycleAPI{steps: []workload.Instance{{Status: workload.StatusRunning}}, gone: 2}
	srv := httptest.NewServer(l)
	defer srv.Close()
	r := runAt(t, srv, "delete", "instance", "web-1", "--wait")
	wantOK(t, r)
	if l.gone != 0 {
		t.Errorf("returned before the instance was gone (%d reads left)", l.gone)
	}
	l.deleted, l.gone = false, 100
	wantErr(t, runAt(t, srv, "delete", "instance", "web-1", "--wait", "--timeout", "1s"),
		"timed out after 1s waiting for instance/web-1 to be gone (it is DESTROYING)")
}

func TestDescribeInstance(t *testing.T) {
	code := 137
	l := &lifecycleAPI{steps: []workload.Instance{{Name: "web-1", WorkloadName: "web", Kind: workload.KindPod, Status: workload.StatusRunning,
		Node: "n1", IP: "10.0.0.2", Restarts: 3, Reason: "liveness probe failed", ExitCode: &code, Ready: true}}}
	srv := httptest.NewServer(l)
	defer srv.Close()
	r := runAt(t, srv, "describe", "instance", "web-1")
	wantOK(t, r)
	for _, want := range []string{"Name:", "web-1", "Workload:", "Status:", "RUNNING", "Node:", "n1", "Restarts:", "3",
		"Exit code:", "137", "Condition Ready:", "True", "Events:", "Scheduled", "on n1", "10s (x3)", "Restarting", "liveness probe failed"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("describe output lacks %q:\n%s", want, r.stdout)
		}
	}
	if len(l.queries) != 1 || l.queries[0] != "kind=instance&name=web-1" {
		t.Errorf("events queries %v, want kind=instance&name=web-1", l.queries)
	}
}
