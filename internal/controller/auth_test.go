package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/internal/controller/httpapi"
	"github.com/rik-org/rik/internal/controller/service"
	"sigs.k8s.io/yaml"
)

// newTokenFor stores a token with role (and ttl, "" for none) and returns
// it.
func (e *env) newTokenFor(role service.Role, ttl ...string) string {
	e.t.Helper()
	req := api.CreateTokenRequest{Role: string(role), Description: "test " + string(role)}
	if len(ttl) > 0 {
		req.TTL = ttl[0]
	}
	created, err := e.s.svc.CreateToken(context.Background(), req)
	if err != nil {
		e.t.Fatal(err)
	}
	return created.Token
}

// tokenParts splits a bearer token, "rik_<id>_<secret>".
func tokenParts(t *testing.T, tok string) (id, secret string) {
	t.Helper()
	parts := strings.Split(tok, "_")
	if len(parts) != 3 || parts[0] != "rik" || len(parts[1]) != 10 || len(parts[2]) != 26 {
		t.Fatalf("token %q is not rik_<10 chars>_<26 chars>", tok)
	}
	return parts[1], parts[2]
}

// as runs a request with token ("" for none).
func (e *env) as(token, method, path string, body any) response {
	e.t.Helper()
	saved := e.token
	e.token = token
	defer func() { e.token = saved }()
	return e.do(method, path, body)
}

func TestAuthTable(t *testing.T) {
	e := newEnv(t)
	admin := e.token
	viewer, operator := e.newTokenFor(service.RoleViewer), e.newTokenFor(service.RoleOperator)
	wl := e.createWorkload(podDef("web"))
	// An expired token, a token with a wrong secret, one deleted.
	expiredTok := e.newTokenFor(service.RoleAdmin, "1ns")
	id, _ := tokenParts(t, viewer)
	wrongSecret := "rik_" + id + "_" + strings.Repeat("a", 26)
	deleted := e.newTokenFor(service.RoleAdmin)
	if r := e.as(deleted, "GET", "/api/v0/workloads.list", nil); r.code != 200 { // now cached
		t.Fatalf("new admin token: %d", r.code)
	}
	e.must(204, "POST", "/api/v0/tokens.delete", map[string]string{"id": deleted})
	unknown := "rik_" + strings.Repeat("b", 10) + "_" + strings.Repeat("c", 26)

	inst := `{"workload_id":"` + wl.ID + `"}`
	for _, tc := range []struct {
		name         string
		token        string
		method, path string
		body         any
		want         int
	}{
		{"no token", "", "GET", "/api/v0/workloads.list", nil, 401},
		{"unknown token", unknown, "GET", "/api/v0/workloads.list", nil, 401},
		{"malformed token", "hello", "GET", "/api/v0/workloads.list", nil, 401},
		{"wrong secret", wrongSecret, "GET", "/api/v0/workloads.list", nil, 401},
		{"expired token", expiredTok, "GET", "/api/v0/workloads.list", nil, 401},
		{"deleted token", deleted, "GET", "/api/v0/workloads.list", nil, 401},
		{"no token, create", "", "POST", "/api/v0/instances.create", inst, 401},
		{"no token, unknown route", "", "GET", "/api/v0/nothing", nil, 401},
		{"no token, metrics", "", "GET", "/metrics", nil, 401},
		{"no token, healthz", "", "GET", "/healthz", nil, 200},
		{"no token, readyz", "", "GET", "/readyz", nil, 200},
		{"viewer lists", viewer, "GET", "/api/v0/workloads.list", nil, 200},
		{"viewer metrics", viewer, "GET", "/metrics", nil, 200},
		{"viewer create workload", viewer, "POST", "/api/v0/workloads.create", podDef("v"), 403},
		{"viewer create instance", viewer, "POST", "/api/v0/instances.create", inst, 403},
		{"viewer delete workload", viewer, "POST", "/api/v0/workloads.delete", `{"id":"web"}`, 403},
		{"viewer logs", viewer, "GET", "/api/v0/instances.logs/x", nil, 403},
		{"viewer lists tokens", viewer, "GET", "/api/v0/tokens.list", nil, 403},
		{"operator creates instance", operator, "POST", "/api/v0/instances.create", inst, 201},
		{"operator creates token", operator, "POST", "/api/v0/tokens.create", `{"role":"viewer"}`, 403},
		{"operator lists tokens", operator, "GET", "/api/v0/tokens.list", nil, 403},
		{"operator deletes token", operator, "POST", "/api/v0/tokens.delete", `{"id":"x"}`, 403},
		{"admin unknown route", admin, "GET", "/api/v0/nothing", nil, 404},
		{"admin creates token", admin, "POST", "/api/v0/tokens.create", `{"role":"viewer"}`, 201},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.as(tc.token, tc.method, tc.path, tc.body)
			if r.code != tc.want {
				t.Fatalf("%s %s: %d %s, want %d", tc.method, tc.path, r.code, r.body, tc.want)
			}
			switch tc.want {
			case 401:
				// The same answer whatever was wrong: no hint.
				if got := r.hdr.Get("WWW-Authenticate"); got != `Bearer realm="rik"` {
					t.Errorf("WWW-Authenticate = %q", got)
				}
				if string(r.body) != `{"error":"unauthorized: a valid bearer token is required"}`+"\n" {
					t.Errorf("401 body %s", r.body)
				}
			case 403:
				if !strings.Contains(r.errorText(t), "forbidden: this needs the ") {
					t.Errorf("403 body %s", r.body)
				}
			}
		})
	}
	// A "Basic" or lowercase scheme: only Bearer is read, case-insensitively.
	req, _ := http.NewRequest("GET", e.http.URL+"/api/v0/workloads.list", nil)
	req.Header.Set("Authorization", "bearer "+viewer)
	if resp, err := e.http.Client().Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("lowercase bearer: %v %v", resp, err)
	}
	req.Header.Set("Authorization", "Basic "+viewer)
	if resp, err := e.http.Client().Do(req); err != nil || resp.StatusCode != 401 {
		t.Errorf("Basic scheme: %v %v", resp, err)
	}
}

const secretPod = `{"kind":"Pod","name":"secret","spec":{"containers":[
 {"name":"app","image":"nginx","env":[{"name":"DB_PASSWORD","value":"hunter2-do-not-show"},{"name":"EMPTY","value":""}]},
 {"name":"side","image":"busybox"}]}}`

// Every route a viewer may call, with a workload holding an env secret and
// an instance of it: the secret appears in none of the answers, and
// workloads.list shows the variable's name with RedactedValue.
func TestViewerSeesEnvRedacted(t *testing.T) {
	e := newEnv(t)
	e.sched.setNodes(&controllerpb.Node{Name: "n1", Status: "Ready"})
	wl := e.createWorkload(secretPod)
	if !strings.Contains(mustJSON(t, wl), "hunter2-do-not-show") {
		t.Fatal("the operator creating the workload does not see its env")
	}
	in := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	e.must(http.StatusOK, "POST", "/api/v0/workloads.apply", secretPod) // managed: rollout and history too
	viewer := e.newTokenFor(service.RoleViewer)
	const secret = "hunter2"

	for p, role := range documentedRoutes(t) {
		method, path, _ := strings.Cut(p, " ")
		if method != "GET" || (role != "public" && !service.RoleViewer.Allows(service.Role(role))) || path == "/api/v0/events" {
			continue
		}
		path = strings.NewReplacer("workloads.instances/{id}", "workloads.instances/"+wl.ID,
			"workloads.rollout/{id}", "workloads.rollout/"+wl.ID, "workloads.history/{id}", "workloads.history/"+wl.ID,
			"instances.get/{id}", "instances.get/"+in.ID).Replace(path)
		if path == "/api/v0/events.list" {
			path += "?kind=workload&name=" + wl.Name
		}
		r := e.as(viewer, "GET", path, nil)
		if r.code != 200 {
			t.Errorf("viewer GET %s: %d %s", path, r.code, r.body)
		}
		if strings.Contains(string(r.body), secret) {
			t.Errorf("viewer GET %s shows the secret: %s", path, r.body)
		}
	}
	var list []workloadRecord
	e.as(viewer, "GET", "/api/v0/workloads.list", nil).decode(t, &list)
	if len(list) != 1 || len(list[0].Value.Spec.Containers) != 2 {
		t.Fatalf("viewer's list: %+v", list)
	}
	env := list[0].Value.Spec.Containers[0].Env
	if len(env) != 2 || env[0].Name != "DB_PASSWORD" || env[0].Value != httpapi.RedactedValue || env[1].Value != httpapi.RedactedValue {
		t.Errorf("viewer's env: %+v", env)
	}
	// The stored definition is untouched: operators still see it.
	operator := e.newTokenFor(service.RoleOperator)
	if r := e.as(operator, "GET", "/api/v0/workloads.list", nil); !strings.Contains(string(r.body), "hunter2-do-not-show") {
		t.Errorf("operator's list: %s", r.body)
	}

	// The event stream, with an event in it.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	events := subscribeEvents(t, ctx, e.http, viewer)
	e.must(http.StatusOK, "POST", "/api/v0/workloads.scale", `{"id":"secret","replicas":2}`) // the reconciler creates one
	for ev := range events {
		if strings.Contains(ev.data, secret) {
			t.Errorf("event shows the secret: %s", ev.data)
		}
		if ev.name == "instance" {
			break
		}
	}
}

// documentedRoutes are the routes openapi.yaml describes ("GET /path"),
// with their x-rik-role.
func documentedRoutes(t *testing.T) map[string]string {
	t.Helper()
	var doc struct {
		Paths map[string]map[string]struct {
			Role string `json:"x-rik-role"`
		} `json:"paths"`
	}
	if err := yaml.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	routes := map[string]string{}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			routes[strings.ToUpper(method)+" "+path] = op.Role
		}
	}
	if len(routes) == 0 {
		t.Fatal("openapi.yaml describes no route")
	}
	return routes
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestTokensManage(t *testing.T) {
	e := newEnv(t)
	first := e.token

	var created api.CreatedToken
	e.must(201, "POST", "/api/v0/tokens.create", map[string]string{"role": "viewer", "description": "ci dashboards", "ttl": "24h"}).decode(t, &created)
	if created.ID == "" || created.Name != created.ID || created.Value.Role != "viewer" || created.Value.Description != "ci dashboards" ||
		created.Value.ExpiresAt == nil || !strings.HasPrefix(created.Token, "rik_"+created.ID+"_") {
		t.Fatalf("created %+v", created)
	}
	if d := created.Value.ExpiresAt.Sub(created.Value.CreatedAt); d != 24*time.Hour {
		t.Errorf("expires after %s", d)
	}
	if r := e.as(created.Token, "GET", "/api/v0/instances.list", nil); r.code != 200 {
		t.Errorf("new viewer token: %d", r.code)
	}

	// The list never shows a secret or its hash.
	r := e.must(200, "GET", "/api/v0/tokens.list", nil)
	_, secret := tokenParts(t, created.Token)
	_, firstSecret := tokenParts(t, first)
	hash := sha256.Sum256([]byte(secret))
	for _, s := range []string{secret, firstSecret, hex.EncodeToString(hash[:]), "secretHash"} {
		if strings.Contains(string(r.body), s) {
			t.Errorf("tokens.list shows %q: %s", s, r.body)
		}
	}
	var items []api.Item[api.Token]
	r.decode(t, &items)
	if len(items) != 2 || items[0].Value.Role != "admin" || items[1].ID != created.ID {
		t.Errorf("tokens.list = %+v", items)
	}

	// Bad requests name the field.
	for body, want := range map[string]string{
		`{}`:                                     "role: required",
		`{"role":"root"}`:                        "role: must be admin, operator or viewer",
		`{"role":"viewer","ttl":"-1h"}`:          "ttl: must be a duration",
		`{"role":"viewer","ttl":"soon"}`:         "ttl: must be a duration",
		`{"role":"viewer","rol":"x"}`:            `unknown field "rol"`,
		`{"role":"viewer","description":"a\nb"}`: "description: must not contain control characters",
	} {
		if got := e.must(400, "POST", "/api/v0/tokens.create", body).errorText(t); !strings.Contains(got, want) {
			t.Errorf("tokens.create %s: %q, want %q", body, got, want)
		}
	}

	// Deleting: by id or by the whole token; the token stops working at once.
	e.must(204, "POST", "/api/v0/tokens.delete", map[string]string{"id": created.Token})
	if r := e.as(created.Token, "GET", "/api/v0/instances.list", nil); r.code != 401 {
		t.Errorf("deleted token: %d", r.code)
	}
	e.must(404, "POST", "/api/v0/tokens.delete", map[string]string{"id": created.ID})
	e.must(404, "POST", "/api/v0/tokens.delete", map[string]string{"id": "../../workload"})

	// The last admin token cannot go; once another exists it can.
	firstID, _ := tokenParts(t, first)
	if got := e.must(409, "POST", "/api/v0/tokens.delete", map[string]string{"id": firstID}).errorText(t); !strings.Contains(got, "last admin token") {
		t.Errorf("deleting the last admin: %q", got)
	}
	e.must(201, "POST", "/api/v0/tokens.create", map[string]string{"role": "admin"}).decode(t, &created)
	e.token = created.Token
	e.must(204, "POST", "/api/v0/tokens.delete", map[string]string{"id": firstID})
	if r := e.as(first, "GET", "/api/v0/tokens.list", nil); r.code != 401 {
		t.Errorf("first admin token after delete: %d", r.code)
	}
}

// Insecure: no token needed, every route open (RIK's clients).
func TestInsecureNeedsNoToken(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Insecure = true })
	if e.token != "" {
		t.Fatal("insecure env has a token")
	}
	wl := e.createWorkload(secretPod)
	e.createInstances(map[string]any{"workload_id": wl.ID})
	if r := e.must(200, "GET", "/api/v0/workloads.list", nil); !strings.Contains(string(r.body), "hunter2") {
		t.Errorf("insecure list: %s", r.body)
	}
	if all, _ := e.s.svc.ListTokens(t.Context()); len(all) != 0 {
		t.Errorf("insecure controller created tokens: %+v", all)
	}
}
