package rikctl

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/workload"
)

// fakeAPI is a stateful fake of the controller's REST API: workloads and
// instances in memory, nodes and logs fixed. It records every request.
type fakeAPI struct {
	mu        sync.Mutex
	workloads []WorkloadItem
	instances []InstanceItem
	nodes     []api.Item[api.Node]
	logs      string
	events    []InstanceItem // sent on GET events
	// holdEvents keeps the event stream open until the client goes away.
	holdEvents bool
	requests   []fakeRequest
	nextID     int
	// roles, when set, makes the fake check bearer tokens like the
	// controller: token -> role; 401 without a known one, 403 when a
	// viewer writes or a non-admin manages tokens.
	roles     map[string]string
	apiTokens []TokenItem
	managed   map[string]*fakeManaged // see managed_test.go
}

type fakeRequest struct {
	Method, Path, EscapedPath, Query, Body, ContentType, Auth string
}

// authorized answers 401 or 403 like the controller and reports whether
// the request may go on.
func (f *fakeAPI) authorized(w http.ResponseWriter, r *http.Request, route string) bool {
	if f.roles == nil {
		return true
	}
	role, ok := f.roles[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
	switch {
	case !ok:
		w.Header().Set("WWW-Authenticate", `Bearer realm="rik"`)
		apiError(w, 401, "unauthorized: a valid bearer token is required")
		return false
	case strings.HasPrefix(route, "tokens.") && role != "admin":
		apiError(w, 403, "forbidden: this needs the admin role, the token has %s", role)
		return false
	case r.Method == "POST" && role == "viewer":
		apiError(w, 403, "forbidden: this needs the operator role, the token has viewer")
		return false
	}
	return true
}

func newFakeAPI(t *testing.T) (*fakeAPI, *httptest.Server) {
	t.Helper()
	f := &fakeAPI{}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeAPI) lastRequest(t *testing.T) fakeRequest {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		t.Fatal("the server got no request")
	}
	return f.requests[len(f.requests)-1]
}

func (f *fakeAPI) requestCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

func apiError(w http.ResponseWriter, code int, format string, args ...any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": fmt.Sprintf(format, args...)})
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, fakeRequest{r.Method, r.URL.Path, r.URL.EscapedPath(), r.URL.RawQuery, string(body),
		r.Header.Get("Content-Type"), r.Header.Get("Authorization")})
	route, arg, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/api/v0/"), "/")
	if !f.authorized(w, r, route) {
		return
	}
	var idBody struct {
		ID string `json:"id"`
	}
	switch r.Method + " " + route {
	case "GET workloads.list":
		reply(w, 200, f.workloads)
	case "GET workloads.instances":
		if f.findWorkload(arg) < 0 {
			apiError(w, 404, "workload %q not found", arg)
			return
		}
		var out []InstanceItem
		for _, it := range f.instances {
			if it.Value.WorkloadID == arg || it.Value.WorkloadName == arg {
				out = append(out, it)
			}
		}
		reply(w, 200, out)
	case "POST workloads.create":
		wl, err := workload.Parse(body)
		if err != nil {
			apiError(w, 400, "%v", err)
			return
		}
		if f.findWorkload(wl.Name) >= 0 {
			apiError(w, 409, "workload %q already exists", wl.Name)
			return
		}
		f.nextID++
		it := WorkloadItem{ID: fmt.Sprintf("w-%d", f.nextID), Name: wl.Name, Value: wl}
		f.workloads = append(f.workloads, it)
		reply(w, 201, it)
	case "POST workloads.delete":
		json.Unmarshal(body, &idBody)
		i := f.findWorkload(idBody.ID)
		if i < 0 {
			apiError(w, 404, "workload %q not found", idBody.ID)
			return
		}
		f.workloads = append(f.workloads[:i], f.workloads[i+1:]...)
		w.WriteHeader(204)
	case "GET instances.list":
		reply(w, 200, f.instances)
	case "POST instances.create":
		var req api.CreateInstancesRequest
		json.Unmarshal(body, &req)
		i := f.findWorkload(req.WorkloadID)
		if i < 0 {
			apiError(w, 404, "workload %q not found", req.WorkloadID)
			return
		}
		var out []InstanceItem
		replicas := 1
		if req.Replicas != nil {
			replicas = *req.Replicas
		}
		for n := range replicas {
			name := fmt.Sprintf("%s-abc%02d", f.workloads[i].Name, n)
			if req.Name != nil {
				name = *req.Name
			}
			f.nextID++
			it := InstanceItem{ID: fmt.Sprintf("i-%d", f.nextID), Name: name, Value: workload.Instance{
				ID: fmt.Sprintf("i-%d", f.nextID), Name: name, WorkloadID: f.workloads[i].ID,
				WorkloadName: f.workloads[i].Name, Kind: f.workloads[i].Value.Kind, Status: workload.StatusPending,
			}}
			f.instances = append(f.instances, it)
			out = append(out, it)
		}
		reply(w, 201, out)
	case "GET instances.get":
		i := f.findInstance(arg)
		if i < 0 {
			apiError(w, 404, "instance %q not found", arg)
			return
		}
		reply(w, 200, f.instances[i])
	case "POST instances.delete":
		json.Unmarshal(body, &idBody)
		i := f.findInstance(idBody.ID)
		if i < 0 {
			apiError(w, 404, "instance %q not found", idBody.ID)
			return
		}
		f.instances[i].Value.Status = workload.StatusDestroying
		w.WriteHeader(204)
	case "GET instances.logs":
		if f.findInstance(arg) < 0 {
			apiError(w, 404, "instance %q not found", arg)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, f.logs)
	case "GET events":
		w.Header().Set("Content-Type", "text/event-stream")
		for _, it := range f.events {
			b, _ := json.Marshal(it)
			fmt.Fprintf(w, ": comment\nevent: node\ndata: {}\n\nevent: instance\ndata: %s\n\n", b)
		}
		w.(http.Flusher).Flush()
		if f.holdEvents {
			f.mu.Unlock()
			<-r.Context().Done()
			f.mu.Lock()
		}
	case "GET nodes.list":
		reply(w, 200, f.nodes)
	case "POST tokens.create":
		var req api.CreateTokenRequest
		json.Unmarshal(body, &req)
		f.nextID++
		it := TokenItem{ID: fmt.Sprintf("t%09d", f.nextID), Value: api.Token{Role: req.Role, Description: req.Description, CreatedAt: testNow}}
		it.Name = it.ID
		if req.TTL != "" {
			d, _ := time.ParseDuration(req.TTL)
			exp := testNow.Add(d)
			it.Value.ExpiresAt = &exp
		}
		f.apiTokens = append(f.apiTokens, it)
		reply(w, 201, api.CreatedToken{Item: it, Token: "rik_" + it.ID + "_secret"})
	case "GET tokens.list":
		reply(w, 200, f.apiTokens)
	case "POST tokens.delete":
		json.Unmarshal(body, &idBody)
		i := slices.IndexFunc(f.apiTokens, func(t TokenItem) bool { return t.ID == idBody.ID })
		if i < 0 {
			apiError(w, 404, "token %q: not found", idBody.ID)
			return
		}
		f.apiTokens = slices.Delete(f.apiTokens, i, i+1)
		w.WriteHeader(204)
	default:
		if !f.serveManaged(w, r.Method+" "+route, arg, body) {
			apiError(w, 404, "no route %s %s", r.Method, r.URL.Path)
		}
	}
}

func (f *fakeAPI) findWorkload(id string) int {
	for i, it := range f.workloads {
		if it.ID == id || it.Name == id {
			return i
		}
	}
	return -1
}

func (f *fakeAPI) findInstance(id string) int {
	for i, it := range f.instances {
		if it.ID == id || it.Name == id {
			return i
		}
	}
	return -1
}

var testNow = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
