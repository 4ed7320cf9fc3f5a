package controller

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/google/uuid"
	"sigs.k8s.io/yaml"

	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/ui"
	"github.com/rik-org/rik/internal/workload"
)

// MaxReplicas caps instances.create.
const MaxReplicas = 1000

// routes builds the REST API. Every route is registered through handle,
// which records its pattern: authorization looks each one up in
// routeRoles.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, h http.Handler) {
		mux.Handle(pattern, h)
		s.patterns = append(s.patterns, pattern)
	}
	hf := func(pattern string, h http.HandlerFunc) { handle(pattern, h) }
	hf("GET /api/v0/workloads.list", s.handleWorkloadsList)
	hf("GET /api/v0/workloads.instances/{id}", s.handleWorkloadInstances)
	hf("POST /api/v0/workloads.create", s.handleWorkloadsCreate)
	hf("POST /api/v0/workloads.delete", s.handleWorkloadsDelete)
	hf("GET /api/v0/instances.list", s.handleInstancesList)
	hf("POST /api/v0/instances.create", s.handleInstancesCreate)
	hf("POST /api/v0/instances.delete", s.handleInstancesDelete)
	hf("GET /api/v0/instances.get/{id}", s.handleInstanceGet)
	hf("GET /api/v0/instances.logs/{id}", s.handleInstanceLogs)
	hf("GET /api/v0/nodes.list", s.handleNodesList)
	hf("GET /api/v0/events", s.handleEvents)
	hf("GET /api/v0/openapi.yaml", s.handleOpenAPI)
	hf("GET /api/v0/workload.schema.json", s.handleSchema)
	hf("POST /api/v0/tokens.create", s.handleTokensCreate)
	hf("GET /api/v0/tokens.list", s.handleTokensList)
	hf("POST /api/v0/tokens.delete", s.handleTokensDelete)
	hf("GET /healthz", s.handleHealth)
	hf("GET /readyz", s.handleReady)
	handle("GET /metrics", s.metrics.handler())
	handle("GET "+ui.Prefix, ui.Handler()) // the dashboard; "/ui" redirects here
	pattern := func(r *http.Request) string {
		_, p := mux.Handler(r)
		return p
	}
	serve := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if pattern(r) == "" {
			// 404 or 405 from the mux: keep its code and Allow header,
			// answer in JSON like every other error.
			w = &jsonErrors{ResponseWriter: w, msg: "no such route: " + r.Method + " " + r.URL.Path}
		}
		mux.ServeHTTP(w, r)
	})
	return s.instrument(s.authorize(serve, pattern), pattern)
}

// jsonErrors rewrites the mux's plain-text 404/405 answers as JSON errors.
type jsonErrors struct {
	http.ResponseWriter
	msg   string
	wrote bool
}

func (j *jsonErrors) WriteHeader(code int) {
	if j.wrote {
		return
	}
	j.wrote = true
	if code == http.StatusMethodNotAllowed {
		j.msg = "method not allowed"
	}
	writeError(j.ResponseWriter, code, j.msg)
}

func (j *jsonErrors) Write(b []byte) (int, error) {
	if !j.wrote {
		j.WriteHeader(http.StatusNotFound)
	}
	return len(b), nil
}

// recorder remembers the status code and, when the answer starts, sets
// its write deadline; Unwrap lets ResponseController flush.
type recorder struct {
	http.ResponseWriter
	code    int
	started func() // called once, before the first byte
}

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
		r.started()
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
		r.started()
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// instrument adds panic recovery, request logging and metrics (by route,
// as pattern names it).
func (s *Server) instrument(next http.Handler, pattern func(*http.Request) string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		rec.started = func() { s.extendWrite(http.NewResponseController(w)) }
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("panic serving request", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v))
				if rec.code == 0 {
					writeError(rec, http.StatusInternalServerError, "internal error")
				}
			}
			route := pattern(r)
			if route == "" || route == "/" {
				route = "unmatched"
			}
			code := rec.code
			if code == 0 {
				code = http.StatusOK
			}
			s.metrics.observe(route, code, time.Since(start))
			s.log.Debug("http request", "method", r.Method, "path", r.URL.Path, "code", code, "duration", time.Since(start))
		}()
		next.ServeHTTP(rec, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encoding response")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(data, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	data, _ := json.Marshal(map[string]string{"error": msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(data, '\n'))
}

// fail maps a domain error to its HTTP status.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", tooBig.Limit))
	case errors.Is(err, workload.ErrInvalid), errors.Is(err, ErrBadInput):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrTimeout):
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusRequestTimeout, err.Error())
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrNameTaken):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, ErrQuotaExceeded):
		writeError(w, http.StatusTooManyRequests, err.Error())
	case errors.Is(err, context.Canceled):
		// client went away; nothing useful to write
	default:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal error")
	}
}

// readBody reads the capped request body.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, err
		}
		if isTimeout(err) {
			return nil, ErrTimeout
		}
		return nil, fmt.Errorf("reading body: %v: %w", err, ErrBadInput)
	}
	return data, nil
}

// decodeStrict decodes one JSON object; unknown fields and trailing data are
// errors.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON body: %v: %w", err, ErrBadInput)
	}
	if dec.More() {
		return fmt.Errorf("invalid JSON body: trailing data: %w", ErrBadInput)
	}
	return nil
}

// yamlBodyToJSON converts a YAML body (Content-Type application/yaml: a
// definition pasted in the dashboard) to JSON; other bodies are returned
// as they are.
func yamlBodyToJSON(r *http.Request, data []byte) ([]byte, error) {
	switch mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt {
	case "application/yaml", "application/x-yaml", "text/yaml":
	default:
		return data, nil
	}
	out, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("invalid YAML body: %v: %w", err, ErrBadInput)
	}
	return out, nil
}

func badField(field, msg string) error {
	return fmt.Errorf("%s: %s: %w", field, msg, ErrBadInput)
}

// --- workloads ---

func (s *Server) handleWorkloadsList(w http.ResponseWriter, r *http.Request) {
	recs, _, err := listAll[workload.Workload](r.Context(), s.cfg.Store, workloadPrefix)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for i := range recs {
		recs[i] = showWorkload(r, recs[i])
	}
	writeJSON(w, http.StatusOK, recs)
}

func (s *Server) handleWorkloadInstances(w http.ResponseWriter, r *http.Request) {
	wl, _, err := s.repo.findWorkload(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, workloadErr(r.PathValue("id"), err))
		return
	}
	insts, err := s.instancesOf(r.Context(), wl.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, insts)
}

func workloadErr(ref string, err error) error {
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("workload %q: %w", ref, ErrNotFound)
	}
	return err
}

func instanceErr(ref string, err error) error {
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("instance %q: %w", ref, ErrNotFound)
	}
	return err
}

func (s *Server) handleWorkloadsCreate(w http.ResponseWriter, r *http.Request) {
	data, err := s.readBody(w, r)
	if err == nil {
		data, err = yamlBodyToJSON(r, data)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	def, err := s.parseAdmitted(data)
	if err != nil {
		if !errors.Is(err, workload.ErrInvalid) {
			err = fmt.Errorf("%v: %w", err, ErrBadInput)
		}
		s.fail(w, r, err)
		return
	}
	rec := workloadRecord{ID: uuid.NewString(), Name: def.Name, Value: def}
	if err := s.repo.createWorkload(r.Context(), rec); err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("workload created", "workload", rec.Name, "id", rec.ID, "by", callerToken(r))
	writeJSON(w, http.StatusCreated, showWorkload(r, rec))
}

type idRequest struct {
	ID string `json:"id"`
}

func (s *Server) readID(w http.ResponseWriter, r *http.Request) (string, error) {
	data, err := s.readBody(w, r)
	if err != nil {
		return "", err
	}
	var req idRequest
	if err := decodeStrict(data, &req); err != nil {
		return "", err
	}
	if req.ID == "" {
		return "", badField("id", "required")
	}
	return req.ID, nil
}

func (s *Server) handleWorkloadsDelete(w http.ResponseWriter, r *http.Request) {
	ref, err := s.readID(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// Once started, a delete runs to the end even if the client goes away:
	// stopping half way would leave the workload with some instances
	// destroyed and the others running.
	if err := s.deleteWorkload(context.WithoutCancel(r.Context()), ref); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// deleteWorkload marks every instance of the workload for deletion, sends
// DESTROY for them and removes the workload record at once.
func (s *Server) deleteWorkload(ctx context.Context, ref string) error {
	wl, kv, err := s.repo.findWorkload(ctx, ref)
	if err != nil {
		return workloadErr(ref, err)
	}
	insts, err := s.instancesOf(ctx, wl.ID)
	if err != nil {
		return err
	}
	var toDestroy []workload.Instance
	for _, inst := range insts {
		final, destroy, err := s.markDeleted(ctx, inst.ID)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if destroy {
			toDestroy = append(toDestroy, final.Value)
		}
	}
	if err := s.cfg.Store.Delete(ctx, kv.Key, kv.Revision); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("deleting workload %s: %w", wl.Name, err)
	}
	s.repo.forgetWorkload(wl.ID)
	s.log.Info("workload deleted", "workload", wl.Name, "instances", len(insts))
	for _, inst := range toDestroy {
		_ = s.sendDestroy(ctx, wl, inst) // retried by the resync
	}
	return nil
}

// markDeleted sets deleteRequested and DESTROYING on an instance, or removes
// it right away if it already terminated. It reports whether DESTROY must be
// sent (also when it was already being deleted: asking again re-sends it,
// and for a terminated instance that was placed: its node keeps what is
// left of it, e.g. a completed pod, until told to destroy it).
func (s *Server) markDeleted(ctx context.Context, id string) (instanceRecord, bool, error) {
	now := s.now()
	rec, c, err := s.repo.updateInstance(ctx, id, func(i *workload.Instance) (change, error) {
		switch {
		case i.Status == workload.StatusTerminated:
			return remove, nil
		case i.DeleteRequested && i.Status == workload.StatusDestroying:
			return keep, nil
		}
		i.DeleteRequested = true
		i.Status = workload.StatusDestroying
		i.UpdatedAt = now
		return write, nil
	})
	if err != nil {
		return rec, false, err
	}
	if c == remove {
		return rec, rec.Value.Node != "", nil
	}
	return rec, rec.Value.DeleteRequested, nil
}

// --- instances ---

func (s *Server) handleInstancesList(w http.ResponseWriter, r *http.Request) {
	recs, _, err := s.repo.listInstances(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, recs)
}

func (s *Server) handleInstanceGet(w http.ResponseWriter, r *http.Request) {
	rec, _, err := s.repo.findInstance(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, instanceErr(r.PathValue("id"), err))
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

type createInstancesRequest struct {
	WorkloadID string  `json:"workload_id"`
	Name       *string `json:"name"`
	Replicas   *int    `json:"replicas"`
}

// check validates the request and returns the replica count.
func (req createInstancesRequest) check() (int, error) {
	if req.WorkloadID == "" {
		return 0, badField("workload_id", "required")
	}
	n := 1
	if req.Replicas != nil {
		n = *req.Replicas
	}
	if n < 1 || n > MaxReplicas {
		return 0, badField("replicas", fmt.Sprintf("must be between 1 and %d", MaxReplicas))
	}
	if req.Name != nil {
		if n > 1 {
			return 0, badField("name", "cannot be set when replicas > 1")
		}
		if err := workload.ValidName(*req.Name); err != nil {
			return 0, badField("name", "must be a DNS label (lowercase a-z0-9 and '-', at most 63 chars)")
		}
	}
	return n, nil
}

func (s *Server) handleInstancesCreate(w http.ResponseWriter, r *http.Request) {
	data, err := s.readBody(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var req createInstancesRequest
	if err := decodeStrict(data, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	n, err := req.check()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx := r.Context()
	wl, _, err := s.repo.findWorkload(ctx, req.WorkloadID)
	if err != nil {
		s.fail(w, r, workloadErr(req.WorkloadID, err))
		return
	}
	if err := s.admitInstances(ctx, wl, n); err != nil {
		s.fail(w, r, err)
		return
	}
	created := make([]instanceRecord, 0, n)
	for range n {
		rec, err := s.newInstance(ctx, wl, req.Name)
		if err != nil {
			if len(created) == 0 {
				s.fail(w, r, err)
				return
			}
			s.log.Error("creating replica", "workload", wl.Name, "err", err)
			break
		}
		created = append(created, rec)
	}
	// The instances are stored: their orders must go out (or be marked for
	// the resync) even if the client goes away now. Each call is bounded.
	sendCtx := context.WithoutCancel(ctx)
	for i, rec := range created {
		created[i].Value, _ = s.sendCreate(sendCtx, wl, rec.Value, "") // failure is recorded on the instance
	}
	writeJSON(w, http.StatusCreated, created)
}

// newInstance stores a PENDING instance of wl, named name or generated.
func (s *Server) newInstance(ctx context.Context, wl workloadRecord, name *string) (instanceRecord, error) {
	now := s.now()
	for attempt := 0; ; attempt++ {
		n := ""
		if name != nil {
			n = *name
		} else {
			n = instanceName(wl.Name)
		}
		inst := workload.Instance{
			ID: uuid.NewString(), Name: n, WorkloadID: wl.ID, WorkloadName: wl.Name,
			Kind: wl.Value.Kind, Status: workload.StatusPending, CreatedAt: now, UpdatedAt: now,
		}
		rec := instanceRecord{ID: inst.ID, Name: n, Value: inst}
		err := s.repo.createInstance(ctx, rec)
		if errors.Is(err, ErrNameTaken) && name == nil && attempt < 5 {
			continue
		}
		return rec, err
	}
}

const nameAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// instanceName is "<workload>-<5 random [a-z0-9]>", a DNS label.
func instanceName(workloadName string) string {
	prefix := workloadName
	if len(prefix) > 57 {
		prefix = prefix[:57]
	}
	for len(prefix) > 0 && prefix[len(prefix)-1] == '-' {
		prefix = prefix[:len(prefix)-1]
	}
	var b [5]byte
	_, _ = rand.Read(b[:])
	suffix := make([]byte, 5)
	for i, c := range b {
		suffix[i] = nameAlphabet[int(c)%len(nameAlphabet)]
	}
	if prefix == "" {
		return "i-" + string(suffix)
	}
	return prefix + "-" + string(suffix)
}

func (s *Server) handleInstancesDelete(w http.ResponseWriter, r *http.Request) {
	ref, err := s.readID(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// Once the record is marked (or removed), DESTROY must go out even if
	// the client goes away: a removed record is not re-sent by the resync.
	ctx := context.WithoutCancel(r.Context())
	rec, _, err := s.repo.findInstance(ctx, ref)
	if err != nil {
		s.fail(w, r, instanceErr(ref, err))
		return
	}
	final, destroy, err := s.markDeleted(ctx, rec.ID)
	if err != nil {
		s.fail(w, r, instanceErr(ref, err))
		return
	}
	if destroy {
		wl, _, err := getByName[workload.Workload](ctx, s.cfg.Store, workloadKey, final.Value.WorkloadName)
		if err != nil || wl.ID != final.Value.WorkloadID {
			wl = destroyStub(final.Value)
		}
		_ = s.sendDestroy(ctx, wl, final.Value) // retried by the resync
	}
	w.WriteHeader(http.StatusNoContent)
}
