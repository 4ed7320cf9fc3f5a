package rikctl

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/workload"
)

// fakeManaged is a managed workload in the fake API: its revisions and its
// rollout, which completes (or fails, failWith) after polls GETs.
type fakeManaged struct {
	revisions []Revision
	replicas  int
	rollout   api.Rollout
	polls     int
	failWith  string
}

func (m *fakeManaged) progress() {
	m.rollout.Phase, m.rollout.Reason, m.rollout.Message = api.RolloutProgressing, "", ""
	m.rollout.Ready, m.rollout.Available, m.rollout.UpToDate, m.rollout.Instances = 0, 0, 0, m.replicas
	m.polls = 0
}

// serveManaged serves the managed workload routes; false for another route.
func (f *fakeAPI) serveManaged(w http.ResponseWriter, route, arg string, body []byte) bool {
	if f.managed == nil {
		f.managed = map[string]*fakeManaged{}
	}
	switch route {
	case "POST workloads.apply":
		wl, err := workload.Parse(body)
		if err != nil {
			apiError(w, 400, "%v", err)
			return true
		}
		reply(w, 200, f.apply(wl, "apply"))
	case "POST workloads.scale":
		var req api.ScaleRequest
		_ = json.Unmarshal(body, &req)
		m := f.managed[req.ID]
		if m == nil {
			apiError(w, 409, "workload %q is unmanaged (made by workloads.create)", req.ID)
			return true
		}
		m.replicas, m.rollout.Replicas = *req.Replicas, *req.Replicas
		m.progress()
		reply(w, 200, m.rollout)
	case "POST workloads.undo":
		var req api.UndoRequest
		_ = json.Unmarshal(body, &req)
		m := f.managed[req.ID]
		if m == nil || len(m.revisions) < 2 {
			apiError(w, 409, "no earlier revision to go back to")
			return true
		}
		to := m.revisions[len(m.revisions)-2]
		if req.Revision > 0 {
			to = m.revisions[req.Revision-1]
		}
		reply(w, 200, f.apply(to.Definition, fmt.Sprintf("undo to revision %d", to.Revision)))
	case "GET workloads.rollout":
		m := f.managed[arg]
		if m == nil {
			apiError(w, 404, "workload %q not found", arg)
			return true
		}
		if m.polls++; m.polls >= 2 && m.rollout.Phase == api.RolloutProgressing {
			if m.failWith != "" {
				m.rollout.Phase, m.rollout.Reason, m.rollout.Message = api.RolloutFailed, api.ReasonProgressDeadline, m.failWith
			} else {
				m.rollout.Phase = api.RolloutComplete
				m.rollout.Ready, m.rollout.Available, m.rollout.UpToDate = m.replicas, m.replicas, m.replicas
			}
		}
		reply(w, 200, m.rollout)
	case "GET workloads.rollouts":
		out := []api.Rollout{}
		for _, m := range f.managed {
			out = append(out, m.rollout)
		}
		reply(w, 200, out)
	case "GET workloads.history":
		m := f.managed[arg]
		if m == nil {
			apiError(w, 404, "workload %q not found", arg)
			return true
		}
		reply(w, 200, m.revisions)
	default:
		return false
	}
	return true
}

// apply stores wl as managed: a new revision when its image changed.
func (f *fakeAPI) apply(wl workload.Workload, cause string) Applied {
	res := Applied{}
	if i := f.findWorkload(wl.Name); i < 0 {
		f.nextID++
		f.workloads = append(f.workloads, WorkloadItem{ID: fmt.Sprintf("w-%d", f.nextID), Name: wl.Name, Value: wl})
		res.Created = true
	}
	res.Workload = f.workloads[f.findWorkload(wl.Name)]
	m := f.managed[wl.Name]
	if m == nil {
		m = &fakeManaged{}
		f.managed[wl.Name] = m
	}
	m.replicas = wl.Replicas
	n := len(m.revisions)
	if n == 0 || definitionSource(m.revisions[n-1].Definition)[0] != definitionSource(wl)[0] {
		for i := range m.revisions {
			m.revisions[i].Current = false
		}
		m.revisions = append(m.revisions, Revision{Revision: n + 1, Cause: cause, Current: true, Definition: wl, CreatedAt: testNow})
		res.Changed = true
		m.rollout = api.Rollout{Workload: wl.Name, ID: res.Workload.ID, Revision: n + 1, Replicas: wl.Replicas}
		m.progress()
	}
	res.Revision = len(m.revisions)
	return res
}

func fastPolls(t *testing.T) {
	old := pollEvery
	pollEvery = time.Millisecond
	t.Cleanup(func() { pollEvery = old })
}

func writeFile(t *testing.T, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const twoYAML = `# two workloads
apiVersion: v1
kind: Pod
name: web
replicas: 3
spec:
  containers: [{name: web, image: "nginx:1"}]
---
# the second
kind: Pod
name: api
spec:
  containers: [{name: api, image: "api:1"}]
--- # trailing, empty
`

func TestApplyManyAndWait(t *testing.T) {
	fastPolls(t)
	f, srv := newFakeAPI(t)
	r := runAt(t, srv, "apply", "-f", writeFile(t, "two.yaml", twoYAML), "--wait")
	wantOK(t, r)
	for _, want := range []string{"workload/web created (revision 1)", "workload/api created (revision 1)",
		"workload/web revision 1: Complete, 3/3 ready, 3 up-to-date, 3 available"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
		}
	}
	if req := f.lastRequest(t); req.Path != "/api/v0/workloads.rollout/api" {
		t.Errorf("last request %s, want the rollout of api", req.Path)
	}

	// A JSON array; one unchanged, one changed.
	arr := `[{"kind":"Pod","name":"web","replicas":3,"spec":{"containers":[{"name":"web","image":"nginx:1"}]}},
	 {"kind":"Pod","name":"api","spec":{"containers":[{"name":"api","image":"api:2"}]}}]`
	r = run(t, nil, arr, "--server", srv.URL, "apply", "-f", "-")
	wantOK(t, r)
	if !strings.Contains(r.stdout, "workload/web unchanged (revision 1)") || !strings.Contains(r.stdout, "workload/api configured (revision 2)") {
		t.Errorf("apply of an array:\n%s", r.stdout)
	}

	// A rollout that fails: --wait says why, exit 1.
	f.mu.Lock()
	f.managed["api"].failWith = "revision 3: 0 of 1 available after 10m0s; api-x CREATING ImagePullFailed"
	f.mu.Unlock()
	r = runAt(t, srv, "apply", "-f", writeFile(t, "bad.yaml", "kind: Pod\nname: api\nspec:\n  containers: [{name: api, image: 'api:broken'}]\n"), "--wait")
	wantErr(t, r, "workload/api: rollout of revision 3 failed: ProgressDeadlineExceeded: revision 3: 0 of 1 available after 10m0s; api-x CREATING ImagePullFailed")
}

func TestApplyBadInput(t *testing.T) {
	_, srv := newFakeAPI(t)
	r := runAt(t, srv, "apply", "-f", writeFile(t, "bad.yaml", "kind: Pod\nname: a\nspec: {containers: [{name: c, image: i}]}\n---\nkind: Pod\nname: b\nreplicas: -1\nspec: {containers: [{name: c}]}\n"))
	for _, want := range []string{"invalid workload in ", "bad.yaml (document 2):", "replicas: must be between 0 and 1000", "spec.containers[0].image: required"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q: %s", want, r.stderr)
		}
	}
	if r := runAt(t, srv, "apply", "-f", writeFile(t, "empty.yaml", "# nothing\n---\n")); r.code != 1 || !strings.HasSuffix(r.stderr, "empty.yaml: no workload in it\n") {
		t.Errorf("empty file: %d %q", r.code, r.stderr)
	}
	wantErr(t, runAt(t, srv, "scale", "workload", "web", "--replicas", "-2"), "--replicas: must be between 0 and 1000")
	wantErr(t, runAt(t, srv, "scale", "workload", "web", "--replicas", "2"), `workload "web" is unmanaged (made by workloads.create)`)
	wantErr(t, runAt(t, srv, "rollout", "undo", "web", "--to-revision", "-1"), "--to-revision: must be positive")
}

func TestScaleRolloutAndGet(t *testing.T) {
	fastPolls(t)
	f, srv := newFakeAPI(t)
	wantOK(t, runAt(t, srv, "apply", "-f", writeFile(t, "web.yaml", strings.Split(twoYAML, "---")[0])))
	wantOK(t, runAt(t, srv, "create", "workload", "-f", filepath.Join("..", "..", "examples", "pod-httpd.json")))
	r := runAt(t, srv, "scale", "workload", "web", "--replicas", "5", "--wait")
	wantOK(t, r)
	if !strings.Contains(r.stdout, "workload/web scaled to 5") || !strings.Contains(r.stdout, "Complete, 5/5 ready") {
		t.Errorf("scale --wait:\n%s", r.stdout)
	}
	if req := f.requests[len(f.requests)-3]; req.Path != "/api/v0/workloads.scale" || req.Body != `{"id":"web","replicas":5}` {
		t.Errorf("scale request %+v", req)
	}
	r = runAt(t, srv, "get", "workloads")
	wantOK(t, r)
	want := "" +
		"NAME    KIND   READY   UP-TO-DATE   REVISION   MANAGED   SOURCE           PORTS\n" +
		"httpd   pod    0/0     -            -          no        busybox:latest   8080->80/TCP\n" +
		"web     pod    5/5     5            1          yes       nginx:1          <none>\n"
	if r.stdout != want {
		t.Errorf("get workloads:\n%s\nwant:\n%s", r.stdout, want)
	}

	wantOK(t, runAt(t, srv, "apply", "-f", writeFile(t, "web2.yaml", strings.Replace(strings.Split(twoYAML, "---")[0], "nginx:1", "nginx:2", 1))))
	r = runAt(t, srv, "rollout", "history", "web")
	wantOK(t, r)
	want = "" +
		"REVISION   CURRENT   CREATED                CAUSE   SOURCE\n" +
		"1          -         2026-11-23T12:00:00Z   apply   nginx:1\n" +
		"2          *         2026-11-23T12:00:00Z   apply   nginx:2\n"
	if r.stdout != want {
		t.Errorf("rollout history:\n%s\nwant:\n%s", r.stdout, want)
	}
	r = runAt(t, srv, "rollout", "status", "web")
	wantOK(t, r)
	if !strings.HasPrefix(r.stdout, "workload/web revision 2: Progressing") {
		t.Errorf("rollout status: %s", r.stdout)
	}
	r = runAt(t, srv, "rollout", "status", "web", "-o", "json")
	wantOK(t, r)
	var st api.Rollout
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Workload != "web" || st.Revision != 2 {
		t.Errorf("rollout status -o json: %v %s", err, r.stdout)
	}
	wantErr(t, runAt(t, srv, "rollout", "status", "web", "-o", "xml"), `--output: want json or yaml, got "xml"`)
	r = runAt(t, srv, "rollout", "undo", "web", "--wait")
	wantOK(t, r)
	if !strings.Contains(r.stdout, "workload/web rolled back (revision 3)") || !strings.Contains(r.stdout, "revision 3: Complete") {
		t.Errorf("rollout undo --wait:\n%s", r.stdout)
	}
	if req := f.requests[len(f.requests)-3]; req.Body != `{"id":"web"}` {
		t.Errorf("undo request %+v", req)
	}
	wantOK(t, runAt(t, srv, "rollout", "undo", "web", "--to-revision", "2"))
	if req := f.lastRequest(t); req.Body != `{"id":"web","revision":2}` {
		t.Errorf("undo --to-revision request %+v", req)
	}
}

// Every command has an example.
func TestNewCommandsHaveExamples(t *testing.T) {
	root := newRootCommand(&app{})
	for _, path := range [][]string{{"apply"}, {"scale"}, {"rollout"}, {"scale", "workload"}, {"rollout", "history"}, {"rollout", "status"}, {"rollout", "undo"}} {
		cmd, _, err := root.Find(path)
		if err != nil || cmd.Example == "" {
			t.Errorf("%v: no example (%v)", path, err)
		}
	}
}
