package controller

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/store/bolt"
)

// Every route has an entry in the role table (its value is checked
// against openapi.yaml's x-rik-role), and the table names no other route.
func TestRouteRoles(t *testing.T) {
	patterns := routePatterns(t)
	for _, p := range patterns {
		if role, ok := routeRoles[p]; !ok || (role != rolePublic && role.rank() == 0) {
			t.Errorf("route %q: role %q in routeRoles", p, role)
		}
	}
	for p := range routeRoles {
		if !slices.Contains(patterns, p) {
			t.Errorf("routeRoles has %q, which is no route", p)
		}
	}
}

func TestRoleAllows(t *testing.T) {
	for _, tc := range []struct {
		have, need Role
		want       bool
	}{
		{RoleAdmin, RoleAdmin, true}, {RoleAdmin, RoleOperator, true}, {RoleAdmin, RoleViewer, true},
		{RoleOperator, RoleAdmin, false}, {RoleOperator, RoleOperator, true}, {RoleOperator, RoleViewer, true},
		{RoleViewer, RoleAdmin, false}, {RoleViewer, RoleOperator, false}, {RoleViewer, RoleViewer, true},
		{"", RoleViewer, false}, {"root", RoleViewer, false}, {"", rolePublic, true},
	} {
		if got := tc.have.allows(tc.need); got != tc.want {
			t.Errorf("%q allows %q = %v, want %v", tc.have, tc.need, got, tc.want)
		}
	}
}

// newTokenFor stores a token with role and returns it.
func (e *env) newTokenFor(role Role) string {
	e.t.Helper()
	tok, _, err := e.s.tokens.create(context.Background(), role, "test "+string(role), 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
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
	viewer, operator := e.newTokenFor(RoleViewer), e.newTokenFor(RoleOperator)
	wl := e.createWorkload(podDef("web"))
	// An expired token, a token with a wrong secret, one deleted.
	past := time.Now().Add(-time.Minute)
	expiredTok, rec := newToken(RoleAdmin, "expired", 0, past.Add(-time.Hour))
	rec.ExpiresAt = &past
	data, _ := json.Marshal(rec)
	if _, err := e.st.Put(t.Context(), tokenPrefix+rec.ID, data, 0); err != nil {
		t.Fatal(err)
	}
	id, _, _ := parseToken(viewer)
	wrongSecret := "rik_" + id + "_" + strings.Repeat("a", tokenSecretLen)
	deleted := e.newTokenFor(RoleAdmin)
	if r := e.as(deleted, "GET", "/api/v0/workloads.list", nil); r.code != 200 { // now cached
		t.Fatalf("new admin token: %d", r.code)
	}
	e.must(204, "POST", "/api/v0/tokens.delete", map[string]string{"id": deleted})
	unknown := "rik_" + strings.Repeat("b", tokenIDLen) + "_" + strings.Repeat("c", tokenSecretLen)

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
	viewer := e.newTokenFor(RoleViewer)
	const secret = "hunter2"

	for _, p := range e.s.patterns {
		method, path, _ := strings.Cut(p, " ")
		if method != "GET" || !RoleViewer.allows(routeRoles[p]) || path == "/api/v0/events" {
			continue
		}
		path = strings.NewReplacer("workloads.instances/{id}", "workloads.instances/"+wl.ID,
			"instances.get/{id}", "instances.get/"+in.ID).Replace(path)
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
	if len(env) != 2 || env[0].Name != "DB_PASSWORD" || env[0].Value != RedactedValue || env[1].Value != RedactedValue {
		t.Errorf("viewer's env: %+v", env)
	}
	// The stored definition is untouched: operators still see it.
	operator := e.newTokenFor(RoleOperator)
	if r := e.as(operator, "GET", "/api/v0/workloads.list", nil); !strings.Contains(string(r.body), "hunter2-do-not-show") {
		t.Errorf("operator's list: %s", r.body)
	}

	// The event stream, with an event in it.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.http.URL+"/api/v0/events", nil)
	req.Header.Set("Authorization", "Bearer "+viewer)
	resp, err := e.http.Client().Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("viewer events: %v %v", resp, err)
	}
	defer resp.Body.Close()
	eventually(t, "subscribed", func() bool { return e.s.events.count() == 1 })
	e.createInstances(map[string]any{"workload_id": wl.ID})
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.Contains(sc.Text(), secret) {
			t.Errorf("event shows the secret: %s", sc.Text())
		}
		if strings.HasPrefix(sc.Text(), "data:") {
			break
		}
	}
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

	var created struct {
		TokenItem
		Token string `json:"token"`
	}
	e.must(201, "POST", "/api/v0/tokens.create", map[string]string{"role": "viewer", "description": "ci dashboards", "ttl": "24h"}).decode(t, &created)
	if created.ID == "" || created.Name != created.ID || created.Value.Role != RoleViewer || created.Value.Description != "ci dashboards" ||
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
	_, secret, _ := parseToken(created.Token)
	_, firstSecret, _ := parseToken(first)
	for _, s := range []string{secret, firstSecret, hashSecret(secret), "secretHash"} {
		if strings.Contains(string(r.body), s) {
			t.Errorf("tokens.list shows %q: %s", s, r.body)
		}
	}
	var items []TokenItem
	r.decode(t, &items)
	if len(items) != 2 || items[0].Value.Role != RoleAdmin || items[1].ID != created.ID {
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
	firstID, _, _ := parseToken(first)
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

func TestBootstrapAdmin(t *testing.T) {
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ts := newTokenStore(st, time.Now)
	file := filepath.Join(t.TempDir(), "sub", "admin.token")
	created, err := ts.bootstrapAdmin(t.Context(), file)
	if err != nil || !created {
		t.Fatalf("first bootstrap: %v %v", created, err)
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}
	b, _ := os.ReadFile(file)
	tok := strings.TrimSpace(string(b))
	if id, err := ts.verify(t.Context(), tok); err != nil || id.role != RoleAdmin {
		t.Fatalf("the written token: %+v %v", id, err)
	}
	// A restart (or another controller on the store) makes no other one.
	if created, err := ts.bootstrapAdmin(t.Context(), file); err != nil || created {
		t.Fatalf("second bootstrap: %v %v", created, err)
	}
	if all, _ := ts.list(t.Context()); len(all) != 1 {
		t.Fatalf("%d tokens", len(all))
	}
	// With every admin token gone, the next start makes one again.
	id, _, _ := parseToken(tok)
	if err := st.Delete(t.Context(), tokenPrefix+id, store.Any); err != nil {
		t.Fatal(err)
	}
	if created, err := ts.bootstrapAdmin(t.Context(), file); err != nil || !created {
		t.Fatalf("bootstrap after the admin token was removed: %v %v", created, err)
	}
	// A file that cannot be written leaves no token behind.
	if err := st.Delete(t.Context(), tokenPrefix+firstTokenID(t, ts), store.Any); err != nil {
		t.Fatal(err)
	}
	blocker := filepath.Join(t.TempDir(), "file")
	os.WriteFile(blocker, nil, 0o600)
	if _, err := ts.bootstrapAdmin(t.Context(), filepath.Join(blocker, "admin.token")); err == nil {
		t.Fatal("bootstrap into an impossible path succeeded")
	}
	if all, _ := ts.list(t.Context()); len(all) != 0 {
		t.Errorf("tokens left after a failed bootstrap: %+v", all)
	}
}

func firstTokenID(t *testing.T, ts *tokenStore) string {
	all, err := ts.list(t.Context())
	if err != nil || len(all) == 0 {
		t.Fatalf("tokens: %v %v", all, err)
	}
	return all[0].ID
}

func TestParseToken(t *testing.T) {
	tok, rec := newToken(RoleViewer, "", 0, time.Now())
	id, secret, ok := parseToken(tok)
	if !ok || id != rec.ID || hashSecret(secret) != rec.SecretHash {
		t.Fatalf("parseToken(%q) = %q %q %v", tok, id, secret, ok)
	}
	for _, bad := range []string{"", "rik_", "rik__", tok + "x", strings.ToUpper(tok), "xyz" + tok[3:],
		"rik_" + id + "_" + secret[:5], "rik_" + id + "_" + strings.Repeat("1", tokenSecretLen)} {
		if _, _, ok := parseToken(bad); ok {
			t.Errorf("parseToken(%q) accepted", bad)
		}
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
	if all, _ := e.s.tokens.list(t.Context()); len(all) != 0 {
		t.Errorf("insecure controller created tokens: %+v", all)
	}
}

func TestNewServerChecksAuthConfig(t *testing.T) {
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := NewServer(Config{Store: st}); err == nil || !strings.Contains(err.Error(), "admin token file") {
		t.Errorf("no admin token file: %v", err)
	}
	if _, err := NewServer(Config{Store: st, Insecure: true, TLS: &tls.Config{}}); err == nil || !strings.Contains(err.Error(), "insecure and TLS") {
		t.Errorf("insecure with TLS: %v", err)
	}
}
