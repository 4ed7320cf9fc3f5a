package rikctl

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/workload"
	"sigs.k8s.io/yaml"
)

type result struct {
	stdout, stderr string
	code           int
}

// run runs rikctl with the given environment variables (HOME is a fresh
// temporary directory unless set).
func run(t *testing.T, env map[string]string, stdin string, args ...string) result {
	t.Helper()
	if env == nil {
		env = map[string]string{}
	}
	if _, ok := env["HOME"]; !ok {
		env["HOME"] = t.TempDir()
	}
	var out, errOut bytes.Buffer
	code := Run(context.Background(), args, Env{
		Stdin:  strings.NewReader(stdin),
		Stdout: &out,
		Stderr: &errOut,
		Getenv: func(k string) string { return env[k] },
		Now:    func() time.Time { return testNow },
	})
	return result{out.String(), errOut.String(), code}
}

func runAt(t *testing.T, srv *httptest.Server, args ...string) result {
	t.Helper()
	return run(t, nil, "", append([]string{"--server", srv.URL}, args...)...)
}

func wantOK(t *testing.T, r result) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit code %d, stderr %q", r.code, r.stderr)
	}
}

func wantErr(t *testing.T, r result, msg string) {
	t.Helper()
	if r.code != 1 {
		t.Errorf("exit code %d, want 1 (stdout %q)", r.code, r.stdout)
	}
	if r.stderr != "error: "+msg+"\n" {
		t.Errorf("stderr = %q\n want %q", r.stderr, "error: "+msg+"\n")
	}
}

func TestCreateWorkloadSendsDefinition(t *testing.T) {
	for _, file := range []string{"pod-httpd.json", "pod-httpd.yaml", "rik-fc-function.json"} {
		t.Run(file, func(t *testing.T) {
			f, srv := newFakeAPI(t)
			path := filepath.Join("..", "..", "examples", file)
			r := runAt(t, srv, "create", "workload", "-f", path)
			wantOK(t, r)
			req := f.lastRequest(t)
			if req.Method != "POST" || req.Path != "/api/v0/workloads.create" || req.ContentType != "application/json" {
				t.Errorf("request = %s %s (%s)", req.Method, req.Path, req.ContentType)
			}
			// The body is JSON and means what the file means.
			sent, err := workload.Parse([]byte(req.Body))
			if err != nil {
				t.Fatalf("server got an invalid body %q: %v", req.Body, err)
			}
			raw, _ := os.ReadFile(path)
			if strings.HasSuffix(file, ".yaml") {
				raw, _ = yaml.YAMLToJSON(raw)
			}
			want, _ := workload.Parse(raw)
			if d := cmp.Diff(want, sent); d != "" {
				t.Errorf("sent definition (-want +got):\n%s", d)
			}
			if wantOut := "workload/" + want.Name + " created (id w-1)\n"; r.stdout != wantOut {
				t.Errorf("stdout = %q, want %q", r.stdout, wantOut)
			}
		})
	}
}

func TestCreateWorkloadFromStdinAndAlias(t *testing.T) {
	f, srv := newFakeAPI(t)
	r := run(t, nil, "kind: Pod\nname: web\nspec:\n  containers:\n  - name: web\n    image: busybox\n",
		"--server", srv.URL, "create", "workloads", "-f", "-")
	wantOK(t, r)
	if got := f.lastRequest(t).Body; !strings.Contains(got, `"name":"web"`) {
		t.Errorf("body = %q", got)
	}
}

func TestCreateWorkloadFlowYAML(t *testing.T) {
	f, srv := newFakeAPI(t)
	wantOK(t, run(t, nil, "{kind: pod, name: flow, spec: {containers: [{name: c, image: busybox}]}}",
		"--server", srv.URL, "create", "workload", "-f", "-"))
	if got := f.lastRequest(t).Body; !json.Valid([]byte(got)) || !strings.Contains(got, `"name":"flow"`) {
		t.Errorf("body = %q", got)
	}
}

func TestCreateWorkloadInvalidLocally(t *testing.T) {
	f, srv := newFakeAPI(t)
	path := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(path, []byte("kind: pod\nname: Bad_Name\nspec:\n  containers:\n  - name: c\n"), 0o644)
	r := runAt(t, srv, "create", "workload", "-f", path)
	wantErr(t, r, "invalid workload in "+path+":\n"+
		"  name: must be a DNS label (lowercase a-z0-9 and '-', at most 63 chars)\n"+
		"  spec.containers[0].image: required")
	if n := f.requestCount(); n != 0 {
		t.Errorf("server got %d requests for an invalid definition", n)
	}
}

func TestCreateWorkloadErrors(t *testing.T) {
	_, srv := newFakeAPI(t)
	example := filepath.Join("..", "..", "examples", "rik-alpine.json")
	wantOK(t, runAt(t, srv, "create", "workload", "-f", example))
	wantErr(t, runAt(t, srv, "create", "workload", "-f", example), `workload "alpine" already exists`)
	wantErr(t, runAt(t, srv, "create", "workload", "-f", "/nonexistent.json"), "reading definition: open /nonexistent.json: no such file or directory")
	wantErr(t, runAt(t, srv, "create", "workload"), `required flag(s) "file" not set`)
	notYAML := filepath.Join(t.TempDir(), "x.yaml")
	os.WriteFile(notYAML, []byte("a: [1\n"), 0o644)
	if r := runAt(t, srv, "create", "workload", "-f", notYAML); r.code != 1 || !strings.Contains(r.stderr, "not JSON or YAML") {
		t.Errorf("got %+v", r)
	}
}

func TestCreateInstance(t *testing.T) {
	f, srv := newFakeAPI(t)
	wantOK(t, runAt(t, srv, "create", "workload", "-f", filepath.Join("..", "..", "examples", "rik-alpine.json")))

	tests := []struct {
		args     []string
		wantBody string
		wantOut  string
	}{
		{[]string{"--workload-id", "w-1"}, `{"workload_id":"w-1","replicas":1}`, "instance/alpine-abc00 created (id i-2)\n"},
		{[]string{"--workload-id", "alpine", "--replicas", "2"}, `{"workload_id":"alpine","replicas":2}`,
			"instance/alpine-abc00 created (id i-3)\ninstance/alpine-abc01 created (id i-4)\n"},
		{[]string{"--workload-id", "alpine", "--name", "mine"}, `{"workload_id":"alpine","name":"mine","replicas":1}`, "instance/mine created (id i-5)\n"},
	}
	for _, tt := range tests {
		r := runAt(t, srv, append([]string{"create", "instance"}, tt.args...)...)
		wantOK(t, r)
		req := f.lastRequest(t)
		if req.Path != "/api/v0/instances.create" || req.Body != tt.wantBody {
			t.Errorf("%v: request %s %q, want body %q", tt.args, req.Path, req.Body, tt.wantBody)
		}
		if r.stdout != tt.wantOut {
			t.Errorf("%v: stdout %q, want %q", tt.args, r.stdout, tt.wantOut)
		}
	}
	n := f.requestCount()
	wantErr(t, runAt(t, srv, "create", "instance", "--workload-id", "alpine", "--name", "x", "--replicas", "2"), "--name: cannot be used with --replicas > 1")
	wantErr(t, runAt(t, srv, "create", "instance", "--workload-id", "alpine", "--name", "Bad/Name"), "--name: must be a DNS label (lowercase a-z0-9 and '-', at most 63 chars)")
	wantErr(t, runAt(t, srv, "create", "instance", "--workload-id", "alpine", "--replicas", "0"), "--replicas: must be between 1 and 1000")
	wantErr(t, runAt(t, srv, "create", "instance"), `required flag(s) "workload-id" not set`)
	if got := f.requestCount(); got != n {
		t.Errorf("invalid flags sent %d requests", got-n)
	}
	wantErr(t, runAt(t, srv, "create", "instance", "--workload-id", "nope"), `workload "nope" not found`)
}

func fixtureInstances() []InstanceItem {
	exit := 1
	return []InstanceItem{
		{ID: "0b8f6a4e-uuid", Name: "web-x1y2z", Value: workload.Instance{
			ID: "0b8f6a4e-uuid", Name: "web-x1y2z", WorkloadID: "w-1", WorkloadName: "web", Kind: workload.KindPod,
			Status: workload.StatusRunning, Node: "node-1", IP: "10.62.0.1",
			Ports:     []workload.PortMapping{{Port: 8080, TargetPort: 80, Protocol: "TCP"}, {Port: 53, TargetPort: 53, Protocol: "UDP"}},
			Restarts:  2,
			Ready:     true,
			CreatedAt: testNow.Add(-3 * time.Hour),
		}},
		{ID: "1c9e-uuid", Name: "fn-abcde", Value: workload.Instance{
			ID: "1c9e-uuid", Name: "fn-abcde", WorkloadID: "w-2", Kind: workload.KindFunction,
			Status: workload.StatusFailed, Reason: api.ReasonNodeLost, Message: "no heartbeat\tfor 15s", ExitCode: &exit,
			CreatedAt: testNow.Add(-45 * time.Second),
		}},
	}
}

func TestGetInstancesFormats(t *testing.T) {
	f, srv := newFakeAPI(t)
	f.instances = fixtureInstances()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"get", "instances"}, "" +
			"NAME        WORKLOAD   STATUS    READY   NODE     IP          PORTS                     RESTARTS   AGE\n" +
			"fn-abcde    w-2        FAILED    false   <none>   <none>      <none>                    0          45s\n" +
			"web-x1y2z   web        RUNNING   true    node-1   10.62.0.1   8080->80/TCP,53->53/UDP   2          3h\n"},
		{[]string{"get", "instance", "-o", "wide"}, "" +
			"NAME        WORKLOAD   STATUS    READY   NODE     IP          PORTS                     RESTARTS   AGE   REASON                            ID\n" +
			"fn-abcde    w-2        FAILED    false   <none>   <none>      <none>                    0          45s   node lost: no heartbeat for 15s   1c9e-uuid\n" +
			"web-x1y2z   web        RUNNING   true    node-1   10.62.0.1   8080->80/TCP,53->53/UDP   2          3h    <none>                            0b8f6a4e-uuid\n"},
		{[]string{"get", "instance", "web-x1y2z"}, "" +
			"NAME        WORKLOAD   STATUS    READY   NODE     IP          PORTS                     RESTARTS   AGE\n" +
			"web-x1y2z   web        RUNNING   true    node-1   10.62.0.1   8080->80/TCP,53->53/UDP   2          3h\n"},
	}
	for _, tt := range tests {
		r := runAt(t, srv, tt.args...)
		wantOK(t, r)
		if r.stdout != tt.want {
			t.Errorf("%v:\n%s\nwant:\n%s", tt.args, r.stdout, tt.want)
		}
	}
}

func TestGetInstancesJSONAndYAML(t *testing.T) {
	f, srv := newFakeAPI(t)
	f.instances = fixtureInstances()
	want := fixtureInstances()
	// Sorted by name.
	want[0], want[1] = want[1], want[0]

	r := runAt(t, srv, "get", "instances", "-o", "json")
	wantOK(t, r)
	var got []InstanceItem
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("-o json is not JSON: %v\n%s", err, r.stdout)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("-o json (-want +got):\n%s", d)
	}

	r = runAt(t, srv, "get", "instances", "-o", "yaml")
	wantOK(t, r)
	got = nil
	if err := yaml.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("-o yaml is not YAML: %v\n%s", err, r.stdout)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("-o yaml (-want +got):\n%s", d)
	}
	if !strings.Contains(r.stdout, "- id: 1c9e-uuid\n") {
		t.Errorf("-o yaml does not look like YAML:\n%s", r.stdout)
	}

	r = runAt(t, srv, "get", "instance", "fn-abcde", "-o", "json")
	wantOK(t, r)
	var one InstanceItem
	if err := json.Unmarshal([]byte(r.stdout), &one); err != nil || one.ID != "1c9e-uuid" {
		t.Errorf("get instance -o json = %q (%v)", r.stdout, err)
	}

	// An empty list is [], not null.
	f.instances = nil
	r = runAt(t, srv, "get", "instances", "-o", "json")
	wantOK(t, r)
	if r.stdout != "[]\n" {
		t.Errorf("empty list = %q", r.stdout)
	}
}

func TestGetInstancesOfWorkload(t *testing.T) {
	f, srv := newFakeAPI(t)
	f.instances = fixtureInstances()
	f.workloads = []WorkloadItem{{ID: "w-1", Name: "web"}}
	r := runAt(t, srv, "get", "instances", "--workload", "web", "-o", "json")
	wantOK(t, r)
	if req := f.lastRequest(t); req.Path != "/api/v0/workloads.instances/web" {
		t.Errorf("path = %q", req.Path)
	}
	var got []InstanceItem
	json.Unmarshal([]byte(r.stdout), &got)
	if len(got) != 1 || got[0].Name != "web-x1y2z" {
		t.Errorf("got %+v", got)
	}
	wantErr(t, runAt(t, srv, "get", "instances", "--workload", "nope"), `workload "nope" not found`)
}

func TestGetInstanceNotFound(t *testing.T) {
	f, srv := newFakeAPI(t)
	wantErr(t, runAt(t, srv, "get", "instance", "a/b c"), `instance "a/b c" not found`)
	if p := f.lastRequest(t).EscapedPath; p != "/api/v0/instances.get/a%2Fb%20c" {
		t.Errorf("path = %q, want the id escaped as one segment", p)
	}
}

func TestGetWorkloads(t *testing.T) {
	f, srv := newFakeAPI(t)
	for _, file := range []string{"pod-httpd.json", "rik-fc-function.json", "rik-2-distro.json"} {
		wantOK(t, runAt(t, srv, "create", "workload", "-f", filepath.Join("..", "..", "examples", file)))
	}
	_ = f
	r := runAt(t, srv, "get", "workloads")
	wantOK(t, r)
	want := "" +
		"NAME          KIND       READY   UP-TO-DATE   REVISION   MANAGED   SOURCE                            PORTS\n" +
		"2-distro      pod        0/0     -            -          no        ubuntu:latest,alpine:latest       <none>\n" +
		"fc-function   function   0/0     -            -          no        https://example.com/rootfs.ext4   8080->80/TCP\n" +
		"httpd         pod        0/0     -            -          no        busybox:latest                    8080->80/TCP\n"
	if r.stdout != want {
		t.Errorf("get workloads:\n%s\nwant:\n%s", r.stdout, want)
	}
	r = runAt(t, srv, "get", "wl", "httpd", "-o", "wide")
	wantOK(t, r)
	want = "" +
		"NAME    KIND   READY   UP-TO-DATE   REVISION   MANAGED   SOURCE           PORTS          RESTART   REQUESTS               ID\n" +
		"httpd   pod    0/0     -            -          no        busybox:latest   8080->80/TCP   Always    cpu=100m,memory=32Mi   w-1\n"
	if r.stdout != want {
		t.Errorf("get workload httpd -o wide:\n%s\nwant:\n%s", r.stdout, want)
	}
	r = runAt(t, srv, "get", "workload", "w-2", "-o", "yaml")
	wantOK(t, r)
	var item WorkloadItem
	if err := yaml.Unmarshal([]byte(r.stdout), &item); err != nil || item.Value.Kind != workload.KindFunction || item.Name != "fc-function" {
		t.Errorf("get workload w-2 -o yaml: %v\n%s", err, r.stdout)
	}
	wantErr(t, runAt(t, srv, "get", "workload", "nope"), `workload "nope" not found`)
	wantErr(t, runAt(t, srv, "get", "workloads", "-o", "xml"), `unknown output format "xml": want table, wide, json, yaml, name, jsonpath=TEMPLATE or go-template=TEMPLATE`)
}

func TestGetNodes(t *testing.T) {
	f, srv := newFakeAPI(t)
	f.nodes = []api.Item[api.Node]{
		{ID: "node-2", Name: "node-2", Value: api.Node{Name: "node-2", Status: "NotReady", Kinds: []string{"pod"},
			Capacity: api.Resources{CPU: 2000, Memory: 2048}, LastHeartbeat: testNow.Add(-5 * time.Minute).Format(time.RFC3339)}},
		{ID: "node-1", Name: "node-1", Value: api.Node{Name: "node-1", Status: "Ready", Kinds: []string{"pod", "function"},
			Capacity: api.Resources{CPU: 4000, Memory: 7821, Disk: 50000}, Usage: api.Resources{CPU: 120, Memory: 900, Disk: 1000},
			Allocated: api.Allocation{CPU: 1100, Memory: 160}, Labels: map[string]string{"zone": "a", "arch": "amd64"},
			Address: "10.0.0.1", Instances: 2, Load1: 0.25, LastHeartbeat: testNow.Add(-3 * time.Second).Format(time.RFC3339)}},
	}
	r := runAt(t, srv, "get", "nodes")
	wantOK(t, r)
	want := "" +
		"NAME     STATUS     KINDS          CPU           MEMORY         INSTANCES   LAST SEEN\n" +
		"node-1   Ready      pod,function   1100m/4000m   160Mi/7821Mi   2           3s ago\n" +
		"node-2   NotReady   pod            0m/2000m      0Mi/2048Mi     0           5m ago\n"
	if r.stdout != want {
		t.Errorf("get nodes:\n%s\nwant:\n%s", r.stdout, want)
	}
	r = runAt(t, srv, "get", "node", "node-1", "-o", "wide")
	wantOK(t, r)
	want = "" +
		"NAME     STATUS   KINDS          CPU           MEMORY         INSTANCES   LAST SEEN   ADDRESS    LOAD   USAGE                               LABELS\n" +
		"node-1   Ready    pod,function   1100m/4000m   160Mi/7821Mi   2           3s ago      10.0.0.1   0.25   cpu=120m,memory=900Mi,disk=1000Mi   arch=amd64,zone=a\n"
	if r.stdout != want {
		t.Errorf("get node node-1 -o wide:\n%s\nwant:\n%s", r.stdout, want)
	}
	r = runAt(t, srv, "get", "nodes", "-o", "json")
	wantOK(t, r)
	var got []api.Item[api.Node]
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || len(got) != 2 || got[0].Value.Capacity.Memory != 7821 {
		t.Errorf("get nodes -o json: %v\n%s", err, r.stdout)
	}
	wantErr(t, runAt(t, srv, "get", "node", "node-9"), `node "node-9" not found`)
}

// While the scheduler is unreachable the controller serves stored nodes,
// status Unknown and stale: shown as such, and kept in JSON.
func TestGetNodesStale(t *testing.T) {
	f, srv := newFakeAPI(t)
	f.nodes = []api.Item[api.Node]{{ID: "node-1", Name: "node-1", Value: api.Node{Name: "node-1", Status: "Unknown", Stale: true,
		Kinds: []string{"pod"}, Capacity: api.Resources{CPU: 4000, Memory: 7821}, Allocated: api.Allocation{CPU: 100, Memory: 64},
		Instances: 1, LastHeartbeat: testNow.Add(-2 * time.Minute).Format(time.RFC3339)}}}
	r := runAt(t, srv, "get", "nodes")
	wantOK(t, r)
	want := "" +
		"NAME     STATUS    KINDS   CPU          MEMORY        INSTANCES   LAST SEEN\n" +
		"node-1   Unknown   pod     100m/4000m   64Mi/7821Mi   1           2m ago\n"
	if r.stdout != want {
		t.Errorf("get nodes:\n%s\nwant:\n%s", r.stdout, want)
	}
	r = runAt(t, srv, "get", "nodes", "-o", "json")
	wantOK(t, r)
	if !strings.Contains(r.stdout, `"stale": true`) && !strings.Contains(r.stdout, `"stale":true`) {
		t.Errorf("get nodes -o json lost stale:\n%s", r.stdout)
	}
}

func TestDelete(t *testing.T) {
	f, srv := newFakeAPI(t)
	wantOK(t, runAt(t, srv, "create", "workload", "-f", filepath.Join("..", "..", "examples", "rik-alpine.json")))
	wantOK(t, runAt(t, srv, "create", "instance", "--workload-id", "alpine", "--name", "one"))

	r := runAt(t, srv, "delete", "instance", "one")
	wantOK(t, r)
	if req := f.lastRequest(t); req.Path != "/api/v0/instances.delete" || req.Body != `{"id":"one"}` {
		t.Errorf("request %s %q", req.Path, req.Body)
	}
	if r.stdout != "instance/one deleted\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	if f.instances[0].Value.Status != workload.StatusDestroying {
		t.Errorf("fake did not see the delete")
	}

	r = runAt(t, srv, "delete", "workloads", "w-1")
	wantOK(t, r)
	if req := f.lastRequest(t); req.Path != "/api/v0/workloads.delete" || req.Body != `{"id":"w-1"}` {
		t.Errorf("request %s %q", req.Path, req.Body)
	}
	if r.stdout != "workload/w-1 deleted\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	wantErr(t, runAt(t, srv, "delete", "workload", "w-1"), `workload "w-1" not found`)
	wantErr(t, runAt(t, srv, "delete", "instance", "nope"), `instance "nope" not found`)
	wantErr(t, runAt(t, srv, "delete", "instance"), "requires at least 1 arg(s), only received 0")
}

func TestLogs(t *testing.T) {
	f, srv := newFakeAPI(t)
	f.instances = fixtureInstances()
	f.logs = "line 1\nline 2\n"
	tests := []struct {
		args      []string
		wantQuery string
	}{
		{[]string{"logs", "web-x1y2z"}, "follow=false"},
		{[]string{"logs", "web-x1y2z", "-c", "side car", "-f", "--tail", "10"}, "container=side+car&follow=true&tail=10"},
	}
	for _, tt := range tests {
		r := runAt(t, srv, tt.args...)
		wantOK(t, r)
		if r.stdout != f.logs {
			t.Errorf("%v: stdout %q", tt.args, r.stdout)
		}
		if req := f.lastRequest(t); req.Path != "/api/v0/instances.logs/web-x1y2z" || req.Query != tt.wantQuery {
			t.Errorf("%v: request %s?%s, want query %s", tt.args, req.Path, req.Query, tt.wantQuery)
		}
	}
	wantErr(t, runAt(t, srv, "logs", "nope"), `instance "nope" not found`)
	wantErr(t, runAt(t, srv, "logs", "web-x1y2z", "--tail", "-1"), "--tail: must be >= 0")
}

func TestUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	r := run(t, nil, "", "--server", url, "get", "nodes")
	wantErr(t, r, "cannot reach rik at "+url+": is the controller running?")
}

func TestServerErrorWithoutJSON(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream\x1b[31m down", http.StatusBadGateway)
	}))
	defer srv.Close()
	wantErr(t, runAt(t, srv, "get", "instances"), "502 Bad Gateway: upstream [31m down")
}

func TestBadAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"not":"a list"}`))
	}))
	defer srv.Close()
	r := runAt(t, srv, "get", "instances")
	if r.code != 1 || !strings.HasPrefix(r.stderr, "error: decoding answer of instances.list:") {
		t.Errorf("got %+v", r)
	}
}

func TestUsageErrors(t *testing.T) {
	wantErr(t, run(t, nil, "", "get", "foo"), `unknown resource type "foo" for "rikctl get": want workloads, instances or nodes`)
	wantErr(t, run(t, nil, "", "delete"), `"rikctl delete" needs a resource type; see "rikctl delete --help"`)
	wantErr(t, run(t, nil, "", "frobnicate"), `unknown command "frobnicate" for "rikctl"`)
	wantErr(t, run(t, nil, "", "--server", "ftp://x", "get", "nodes"), `--server: "ftp://x": must be an http:// or https:// URL`)
}

func TestConfig(t *testing.T) {
	_, srv := newFakeAPI(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	yamlCfg := write("c.yaml", "cluster:\n  name: test\n  server: "+srv.URL+"/\n")
	jsonCfg := write("c.json", `{"cluster":{"name":"test","server":"`+srv.URL+`"}}`)
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, ".rik"), 0o700)
	os.WriteFile(filepath.Join(home, ".rik", "config.yaml"), []byte("cluster:\n  server: "+srv.URL+"\n"), 0o600)

	ok := []map[string]string{
		{"RIKCONFIG": yamlCfg},
		{"RIKCONFIG": jsonCfg},
		{"HOME": home},
	}
	for _, env := range ok {
		wantOK(t, run(t, env, "", "get", "nodes"))
	}
	// Missing file: the default server (nothing listens on it in this test,
	// or something else does: either way not our fake).
	cfg, err := LoadConfig(filepath.Join(dir, "missing.yaml"))
	if err != nil || cfg.Cluster.Server != DefaultServer {
		t.Errorf("missing config = %+v, %v", cfg, err)
	}
	// --server wins over the file.
	wantOK(t, run(t, map[string]string{"RIKCONFIG": write("bad-server.yaml", "cluster:\n  server: http://127.0.0.1:1\n")}, "",
		"--server", srv.URL, "get", "nodes"))

	bad := write("bad.yaml", "cluster: [")
	if r := run(t, map[string]string{"RIKCONFIG": bad}, "", "get", "nodes"); r.code != 1 || !strings.HasPrefix(r.stderr, "error: parsing config "+bad) {
		t.Errorf("bad config: %+v", r)
	}
	badURL := write("bad-url.yaml", "cluster:\n  server: 127.0.0.1:5000\n")
	wantErr(t, run(t, map[string]string{"RIKCONFIG": badURL}, "", "get", "nodes"),
		`config `+badURL+`: cluster.server: "127.0.0.1:5000": must be an http:// or https:// URL`)
	if got := ConfigPath(func(k string) string { return map[string]string{"HOME": "/h"}[k] }); got != "/h/.rik/config.yaml" {
		t.Errorf("ConfigPath = %q", got)
	}
}
