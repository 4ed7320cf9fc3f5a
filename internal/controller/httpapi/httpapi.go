// Package httpapi is the controller's REST API (/api/v0, described in
// api/openapi.yaml): routes and handlers over the service, authorization
// by bearer token and role, the one mapping of domain errors to HTTP
// status codes, the JSON shapes of package api, and the HTTP server with
// its limits.
package httpapi

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rik-org/rik/internal/controller/service"
	"github.com/rik-org/rik/internal/ui"
)

// Config configures the API.
type Config struct {
	Service *service.Service // required
	Logger  *slog.Logger     // nil: discarded
	// Metrics receives the HTTP metrics and is served at /metrics;
	// required.
	Metrics *prometheus.Registry
	// Insecure turns authentication off: no tokens, every caller is
	// admin (RIK's own clients send none).
	Insecure     bool
	MaxBodyBytes int64 // request body cap; DefaultMaxBodyBytes
	// KeepaliveEvery is the period of keepalive comments on the event
	// stream; DefaultKeepaliveEvery.
	KeepaliveEvery time.Duration

	TLS *tls.Config // nil: plain HTTP
	Limits
}

// Limits are what one client can hold of the HTTP server; 0 takes the
// default.
type Limits struct {
	ReadHeaderTimeout time.Duration // DefaultReadHeaderTimeout
	// ReadTimeout bounds one request's headers and body;
	// DefaultReadTimeout.
	ReadTimeout time.Duration
	IdleTimeout time.Duration // DefaultIdleTimeout
	// WriteTimeout bounds one answer, or each write of a stream;
	// DefaultWriteTimeout.
	WriteTimeout   time.Duration
	MaxHeaderBytes int // DefaultMaxHeaderBytes
	MaxConnsPerIP  int // DefaultMaxConnsPerIP; < 0: no cap
}

// Defaults.
const (
	DefaultMaxBodyBytes   = 1 << 20
	DefaultKeepaliveEvery = 15 * time.Second
)

// API serves the REST API.
type API struct {
	cfg     Config
	svc     *service.Service
	log     *slog.Logger
	metrics *metrics
	handler http.Handler
	// patterns are the routes registered, in order (see routeRoles).
	patterns []string
	// streams is cancelled when the HTTP server shuts down, ending
	// long-lived answers (events, followed logs).
	streams    context.Context
	endStreams context.CancelFunc
}

// New builds the API; Serve serves it.
func New(cfg Config) *API {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	setDefault(&cfg.KeepaliveEvery, DefaultKeepaliveEvery)
	setDefault(&cfg.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	setDefault(&cfg.ReadTimeout, DefaultReadTimeout)
	setDefault(&cfg.IdleTimeout, DefaultIdleTimeout)
	setDefault(&cfg.WriteTimeout, DefaultWriteTimeout)
	setDefault(&cfg.MaxHeaderBytes, DefaultMaxHeaderBytes)
	setDefault(&cfg.MaxConnsPerIP, DefaultMaxConnsPerIP)
	a := &API{cfg: cfg, svc: cfg.Service, log: cfg.Logger, metrics: newMetrics(cfg.Metrics)}
	a.streams, a.endStreams = context.WithCancel(context.Background())
	a.handler = a.routes()
	return a
}

// setDefault sets *v to def when it is 0.
func setDefault[T int | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// Handler is the API's HTTP handler.
func (a *API) Handler() http.Handler { return a.handler }

// routes builds the REST API. Every route is registered through handle,
// which records its pattern: authorization looks each one up in
// routeRoles.
func (a *API) routes() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, h http.Handler) {
		mux.Handle(pattern, h)
		a.patterns = append(a.patterns, pattern)
	}
	hf := func(pattern string, h http.HandlerFunc) { handle(pattern, h) }
	hf("GET /api/v0/workloads.list", a.workloadsList)
	hf("GET /api/v0/workloads.instances/{id}", a.workloadInstances)
	hf("POST /api/v0/workloads.create", a.workloadsCreate)
	hf("POST /api/v0/workloads.delete", a.workloadsDelete)
	hf("POST /api/v0/workloads.apply", a.workloadsApply)
	hf("POST /api/v0/workloads.scale", a.workloadsScale)
	hf("POST /api/v0/workloads.undo", a.workloadsUndo)
	hf("GET /api/v0/workloads.rollout/{id}", a.workloadRollout)
	hf("GET /api/v0/workloads.rollouts", a.workloadsRollouts)
	hf("GET /api/v0/workloads.history/{id}", a.workloadHistory)
	hf("GET /api/v0/instances.list", a.instancesList)
	hf("POST /api/v0/instances.create", a.instancesCreate)
	hf("POST /api/v0/instances.delete", a.instancesDelete)
	hf("GET /api/v0/instances.get/{id}", a.instanceGet)
	hf("GET /api/v0/instances.logs/{id}", a.instanceLogs)
	hf("GET /api/v0/nodes.list", a.nodesList)
	hf("GET /api/v0/events", a.events)
	hf("GET /api/v0/events.list", a.eventsList)
	hf("GET /api/v0/openapi.yaml", a.openAPI)
	hf("GET /api/v0/workload.schema.json", a.schema)
	hf("POST /api/v0/tokens.create", a.tokensCreate)
	hf("GET /api/v0/tokens.list", a.tokensList)
	hf("POST /api/v0/tokens.delete", a.tokensDelete)
	hf("GET /healthz", a.health)
	hf("GET /readyz", a.ready)
	handle("GET /metrics", a.metrics.handler(a.cfg.Metrics))
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
	return a.instrument(a.authorize(serve, pattern), pattern)
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
func (a *API) instrument(next http.Handler, pattern func(*http.Request) string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		rec.started = func() { a.extendWrite(http.NewResponseController(w)) }
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				a.log.Error("panic serving request", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v))
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
			a.metrics.observe(route, code, time.Since(start))
			a.log.Debug("http request", "method", r.Method, "path", r.URL.Path, "code", code, "duration", time.Since(start))
		}()
		next.ServeHTTP(rec, r)
	})
}

// streamContext is r's context, also cancelled when the server shuts down.
func (a *API) streamContext(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(a.streams, cancel)
	return ctx, func() { stop(); cancel() }
}
