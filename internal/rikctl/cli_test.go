package rikctl

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/version"
)

func TestOutputFormats(t *testing.T) {
	f, srv := newFakeAPI(t)
	f.instances = fixtureInstances()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "instances", "-o", "name"}, "instance/fn-abcde\ninstance/web-x1y2z\n"},
		{[]string{"get", "instance", "web-x1y2z", "-o", "name"}, "instance/web-x1y2z\n"},
		{[]string{"get", "instances", "-o", "jsonpath={.[*].name}"}, "fn-abcde web-x1y2z"},
		{[]string{"get", "instances", "-o", `jsonpath={range .[*]}{.name}{"\t"}{.value.status}{"\n"}{end}`},
			"fn-abcde\tFAILED\nweb-x1y2z\tRUNNING\n"},
		{[]string{"get", "instances", "-o", "jsonpath={.[0].value.ports}{.[-1].value.ports[*].port}"}, "8080 53"},
		{[]string{"get", "instance", "web-x1y2z", "-o", "jsonpath={.value.ports[1]['protocol']} {.value.restarts} {.missing}"}, "UDP 2 "},
		{[]string{"get", "instances", "-o", `go-template={{range .}}{{.name}}={{.value.status}} {{end}}`}, "fn-abcde=FAILED web-x1y2z=RUNNING "},
		{[]string{"get", "instance", "web-x1y2z", "-o", `go-template={{.value.node}}{{.value.nothing}}`}, "node-1<no value>"},
	} {
		r := runAt(t, srv, tc.args...)
		wantOK(t, r)
		if r.stdout != tc.want {
			t.Errorf("%v: %q, want %q", tc.args, r.stdout, tc.want)
		}
	}
	for _, tc := range []struct {
		format, err string
	}{
		{"jsonpath={.name", "-o jsonpath: unclosed {"},
		{"jsonpath={range .[*]}{.name}", "-o jsonpath: {range .[*]} without {end}"},
		{"jsonpath={.name}{end}", "-o jsonpath: {end} without {range}"},
		{"jsonpath={.[?(@.x)]}", `-o jsonpath: path ".[?(@.x)]": [?(@.x)]: want an index, * or a quoted field name (filters and slices are not supported)`},
		{"jsonpath={name}", `-o jsonpath: path "name": want it to start with . or [`},
		{"go-template={{.name", "-o go-template: template: output:1: unclosed action"},
	} {
		wantErr(t, runAt(t, srv, "get", "instances", "-o", tc.format), tc.err)
	}
}

func TestNoResourcesFound(t *testing.T) {
	_, srv := newFakeAPI(t)
	for _, kind := range []string{"workloads", "instances", "nodes"} {
		r := runAt(t, srv, "get", kind)
		wantOK(t, r)
		if r.stdout != "" || r.stderr != "No resources found\n" {
			t.Errorf("get %s on an empty cluster: stdout %q, stderr %q", kind, r.stdout, r.stderr)
		}
		if r := runAt(t, srv, "get", kind, "-o", "json"); r.stdout != "[]\n" || r.stderr != "" {
			t.Errorf("get %s -o json on an empty cluster: %+v", kind, r)
		}
	}
}

// healthServer answers /healthz with version and the rest with the fake
// API.
func healthServer(t *testing.T, v string) *httptest.Server {
	t.Helper()
	f := &fakeAPI{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, 200, api.Health{Status: "ok", Scheduler: "connected", Version: v})
	})
	mux.Handle("/", f)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestVersion(t *testing.T) {
	srv := healthServer(t, "v1.2.3")
	r := runAt(t, srv, "version")
	wantOK(t, r)
	want := "Client Version: " + version.Version + " (" + version.GoVersion() + ")\nServer Version: v1.2.3\n"
	if r.stdout != want {
		t.Errorf("version: %q, want %q", r.stdout, want)
	}
	r = run(t, nil, "", "--server", "http://127.0.0.1:1", "version", "--client")
	wantOK(t, r)
	if r.stdout != "Client Version: "+version.Version+" ("+version.GoVersion()+")\n" {
		t.Errorf("version --client: %q", r.stdout)
	}
	r = run(t, nil, "", "--version")
	if wantOK(t, r); !strings.HasPrefix(r.stdout, "rikctl version "+version.Version+" ") {
		t.Errorf("--version: %q", r.stdout)
	}
	r = run(t, nil, "", "--server", "http://127.0.0.1:1", "version")
	if r.code != 1 || !strings.HasPrefix(r.stdout, "Client Version: ") || !strings.Contains(r.stderr, "server version: ") {
		t.Errorf("version with no server: %+v", r)
	}
}

func TestContexts(t *testing.T) {
	prod, dev := healthServer(t, "prod-version"), healthServer(t, "dev-version")
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{"RIKCONFIG": path}
	serverVersion := func(args ...string) string {
		t.Helper()
		r := run(t, env, "", append(args, "version")...)
		wantOK(t, r)
		_, v, _ := strings.Cut(r.stdout, "Server Version: ")
		return strings.TrimSpace(v)
	}
	write("# mine\ncurrent-context: prod\ncontexts:\n- name: prod\n  cluster: {server: " + prod.URL + "}\n  user: {token: p}\n" +
		"- name: dev\n  cluster: {server: " + dev.URL + "}\n")
	if v := serverVersion(); v != "prod-version" {
		t.Errorf("current context: server %q", v)
	}
	if v := serverVersion("--context", "dev"); v != "dev-version" {
		t.Errorf("--context dev: server %q", v)
	}
	r := run(t, env, "", "config", "get-contexts")
	wantOK(t, r)
	want := "CURRENT   NAME   SERVER\n*         prod   " + prod.URL + "\n<none>    dev    " + dev.URL + "\n"
	if r.stdout != want {
		t.Errorf("get-contexts:\n%s\nwant:\n%s", r.stdout, want)
	}
	wantOK(t, run(t, env, "", "config", "use-context", "dev"))
	if v := serverVersion(); v != "dev-version" {
		t.Errorf("after use-context dev: server %q", v)
	}
	if r := run(t, env, "", "config", "current-context"); r.stdout != "dev\n" {
		t.Errorf("current-context: %+v", r)
	}
	if b, _ := os.ReadFile(path); !strings.HasPrefix(string(b), "# mine\n") || !strings.Contains(string(b), "token: p") {
		t.Errorf("use-context lost the file's comment or contents:\n%s", b)
	}
	wantErr(t, run(t, env, "", "config", "use-context", "nope"), "config "+path+`: context "nope" not found (see rikctl config get-contexts)`)
	wantErr(t, run(t, env, "", "--context", "nope", "get", "nodes"), "config "+path+`: context "nope" not found (see rikctl config get-contexts)`)

	// RIK's single-cluster file is one context.
	write("cluster:\n  name: old\n  server: " + prod.URL + "\n")
	if v := serverVersion(); v != "prod-version" {
		t.Errorf("single-cluster file: server %q", v)
	}
	if r := run(t, env, "", "config", "get-contexts"); r.stdout != "CURRENT   NAME   SERVER\n*         old    "+prod.URL+"\n" {
		t.Errorf("get-contexts of a single-cluster file: %q", r.stdout)
	}
	wantOK(t, run(t, env, "", "config", "use-context", "old"))
	write("contexts:\n- name: a\n  cluster: {server: 127.0.0.1:5000}\n")
	wantErr(t, run(t, env, "", "get", "nodes"), "config "+path+`: contexts[0].cluster.server: "127.0.0.1:5000": must be an http:// or https:// URL`)
}

func TestCompletion(t *testing.T) {
	f, srv := newFakeAPI(t)
	f.instances = fixtureInstances()
	f.nodes = []api.Item[api.Node]{{ID: "node-1", Name: "node-1"}, {ID: "node-2", Name: "node-2"}}
	f.workloads = []WorkloadItem{{ID: "w-1", Name: "httpd"}}
	complete := func(args ...string) []string {
		t.Helper()
		r := runAt(t, srv, append([]string{cobra.ShellCompRequestCmd}, args...)...)
		wantOK(t, r)
		return strings.Split(strings.TrimSpace(r.stdout), "\n")
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "instances", ""}, "fn-abcde,web-x1y2z,:4"},
		{[]string{"logs", "we"}, "web-x1y2z,:4"},
		{[]string{"get", "nodes", ""}, "node-1,node-2,:4"},
		{[]string{"delete", "instance", "web-x1y2z", ""}, "fn-abcde,:4"},
		{[]string{"get", "instances", "web-x1y2z", ""}, ":4"}, // one argument at most
		{[]string{"create", "instance", "--workload-id", "h"}, "httpd,:4"},
		{[]string{"get", "instances", "--workload", ""}, "httpd,:4"},
	} {
		if got := strings.Join(complete(tc.args...), ","); got != tc.want {
			t.Errorf("complete %v = %q, want %q", tc.args, got, tc.want)
		}
	}
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		r := run(t, nil, "", "completion", shell)
		wantOK(t, r)
		if !strings.Contains(r.stdout, "rikctl") {
			t.Errorf("completion %s: %.100q", shell, r.stdout)
		}
	}
}

// The bash completion script loads in bash and registers rikctl's
// completion.
func TestBashCompletionLoads(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("bash is missing")
		}
		t.Skip("no bash")
	}
	r := run(t, nil, "", "completion", "bash")
	wantOK(t, r)
	script := filepath.Join(t.TempDir(), "rikctl.bash")
	if err := os.WriteFile(script, []byte(r.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bash, "-c", `set -e; source "$1"; complete -p rikctl`, "bash", script).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "rikctl") {
		t.Errorf("bash: %v: %s", err, out)
	}
}

// Every command says what it does and shows examples.
func TestEveryCommandHasAnExample(t *testing.T) {
	root := newRootCommand(&app{env: Env{Getenv: func(string) string { return "" }}})
	walk(root, func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" {
			return
		}
		if c.Example == "" || c.Short == "" {
			t.Errorf("%q: Example %q, Short %q", c.CommandPath(), c.Example, c.Short)
		}
	})
}
