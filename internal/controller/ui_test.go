package controller

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rik-org/rik/internal/ui"
)

// controllerWithToken is a controller's API handler and its admin token.
func controllerWithToken(t *testing.T) (http.Handler, string) {
	t.Helper()
	e := newEnv(t)
	return e.s.api.Handler(), e.token
}

func doRaw(h http.Handler, method, path, token, ctype, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// The controller serves the dashboard's files without a token, the API
// still only with one.
func TestControllerServesDashboard(t *testing.T) {
	h, tok := controllerWithToken(t)
	rec := doRaw(h, "GET", "/ui/", "", "", "")
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Security-Policy") != ui.ContentSecurityPolicy() {
		t.Fatalf("GET /ui/ without a token: %d, CSP %q", rec.Code, rec.Header().Get("Content-Security-Policy"))
	}
	if rec := doRaw(h, "GET", "/ui/app.js", "", "", ""); rec.Code != http.StatusOK {
		t.Errorf("GET /ui/app.js without a token: %d", rec.Code)
	}
	if rec := doRaw(h, "GET", "/ui", "", "", ""); rec.Code/100 != 3 || rec.Header().Get("Location") != "/ui/" {
		t.Errorf("GET /ui: %d to %q, want a redirect to /ui/", rec.Code, rec.Header().Get("Location"))
	}
	if rec := doRaw(h, "POST", "/ui/", tok, "", ""); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /ui/: %d, want 405", rec.Code)
	}
	if rec := doRaw(h, "GET", "/api/v0/instances.list", "", "", ""); rec.Code != http.StatusUnauthorized {
		t.Errorf("API without a token: %d, want 401", rec.Code)
	}
}

const podYAML = `# pasted in the dashboard
apiVersion: v1
kind: Pod
name: from-yaml
spec:
  containers:
    - name: web
      image: example/web:1
      env:
        - {name: GREETING, value: "hi: there"}
`

// workloads.create takes a YAML definition (the dashboard sends a pasted
// one as is), with the same checks as JSON.
func TestCreateWorkloadFromYAML(t *testing.T) {
	h, tok := controllerWithToken(t)
	rec := doRaw(h, "POST", "/api/v0/workloads.create", tok, "application/yaml", podYAML)
	if rec.Code != http.StatusCreated || !strings.Contains(rec.Body.String(), `"hi: there"`) {
		t.Fatalf("YAML create: %d %s", rec.Code, rec.Body)
	}
	for _, c := range []struct{ body, ctype, want string }{
		{"kind: Pod\nname: [unclosed", "application/yaml", "invalid YAML body"},
		{strings.Replace(podYAML, "image:", "imag:", 1), "application/yaml; charset=utf-8", "spec.containers[0].imag"},
		{podYAML, "application/json", "invalid JSON"}, // YAML only when said so
	} {
		rec := doRaw(h, "POST", "/api/v0/workloads.create", tok, c.ctype, c.body)
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), c.want) {
			t.Errorf("%s %q: %d %s, want 400 with %q", c.ctype, c.body, rec.Code, rec.Body, c.want)
		}
	}
}
