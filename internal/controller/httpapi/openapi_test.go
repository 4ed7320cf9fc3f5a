package httpapi

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/controller/service"
	"sigs.k8s.io/yaml"
)

// The OpenAPI description parses and documents every route served, with
// the role routeRoles gives it (x-rik-role), and 401 wherever a token is
// needed.
func TestOpenAPICoversRoutes(t *testing.T) {
	var doc struct {
		OpenAPI string `json:"openapi"`
		Paths   map[string]map[string]struct {
			Role      string         `json:"x-rik-role"`
			Security  *[]any         `json:"security"`
			Responses map[string]any `json:"responses"`
		} `json:"paths"`
	}
	if err := yaml.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi version %q", doc.OpenAPI)
	}
	for _, p := range routePatterns(t) {
		method, path, _ := strings.Cut(p, " ")
		op, ok := doc.Paths[path][strings.ToLower(method)]
		if !ok {
			t.Errorf("openapi.yaml lacks %s", p)
			continue
		}
		if want := string(routeRoles[p]); op.Role != want {
			t.Errorf("openapi.yaml: %s has x-rik-role %q, the controller asks for %q", p, op.Role, want)
		}
		_, has401 := op.Responses["401"]
		public := routeRoles[p] == rolePublic
		if public != (op.Security != nil && len(*op.Security) == 0) || public == has401 {
			t.Errorf("openapi.yaml: %s: security %v, 401 documented %v, public %v", p, op.Security, has401, public)
		}
	}
}

// routePatterns are the routes the API registers.
func routePatterns(t *testing.T) []string {
	t.Helper()
	a := testAPI(nil)
	if len(a.patterns) == 0 {
		t.Fatal("no route recorded")
	}
	return a.patterns
}

// testAPI is an API over svc (nil: no route may be called).
func testAPI(svc *service.Service) *API {
	return New(Config{Service: svc, Metrics: prometheus.NewRegistry(), Insecure: true})
}
