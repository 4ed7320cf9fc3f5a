package controller

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestHealthAndDocs(t *testing.T) {
	e := newEnv(t)
	var h map[string]any
	e.must(200, "GET", "/healthz", nil).decode(t, &h)
	if h["status"] != "ok" || h["scheduler"] != "connected" || h["leader"] != true {
		t.Errorf("healthz %v", h)
	}
	r := e.must(200, "GET", "/api/v0/openapi.yaml", nil)
	if !strings.Contains(string(r.body), "openapi: 3") || !strings.Contains(string(r.body), "/instances.create") {
		t.Errorf("openapi.yaml does not describe the API: %.200s", r.body)
	}
	r = e.must(200, "GET", "/api/v0/workload.schema.json", nil)
	if !json.Valid(r.body) {
		t.Errorf("schema is not JSON")
	}
}
