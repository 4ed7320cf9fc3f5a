package controller

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rik-org/rik/internal/workload"
)

var allStatuses = []workload.Status{
	workload.StatusUnknown, workload.StatusPending, workload.StatusCreating, workload.StatusRunning,
	workload.StatusFailed, workload.StatusDestroying, workload.StatusTerminated,
}

// metrics are the controller's Prometheus metrics, on their own registry.
type metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	instances *prometheus.GaugeVec
	connected prometheus.Gauge
	// connRefused counts connections closed for being past the per-client cap.
	connRefused prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rik_controller_http_requests_total",
			Help: "HTTP requests served, by route and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rik_controller_http_request_duration_seconds",
			Help:    "HTTP request latency, by route.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
		instances: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rik_controller_instances",
			Help: "Instances in the store, by status.",
		}, []string{"status"}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rik_controller_scheduler_connected",
			Help: "1 while the controller is subscribed to the scheduler.",
		}),
		connRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rik_controller_http_connections_refused_total",
			Help: "Connections closed at once because their client address had too many open.",
		}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.instances, m.connected, m.connRefused,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, st := range allStatuses {
		m.instances.WithLabelValues(string(st)).Set(0)
	}
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

func (m *metrics) observe(route string, code int, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.latency.WithLabelValues(route).Observe(d.Seconds())
}

func (m *metrics) setSchedulerConnected(v bool) {
	if v {
		m.connected.Set(1)
	} else {
		m.connected.Set(0)
	}
}

func (m *metrics) resetInstances(cache map[string]instanceRecord) {
	counts := map[workload.Status]int{}
	for _, r := range cache {
		counts[r.Value.Status]++
	}
	for _, st := range allStatuses {
		m.instances.WithLabelValues(string(st)).Set(float64(counts[st]))
	}
}

func (m *metrics) instanceSeen(st workload.Status) { m.instances.WithLabelValues(string(st)).Inc() }
func (m *metrics) instanceGone(st workload.Status) { m.instances.WithLabelValues(string(st)).Dec() }
