package scheduler

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rik-org/rik/internal/version"
)

// Placement results, the label of rik_scheduler_placements_total.
const (
	resultPlaced = "placed" // an instance was put on a node
	resultNoFit  = "no_fit" // an attempt found no node
)

// Join results, the label of rik_scheduler_joins_total.
const (
	resultJoined  = "joined"  // a node got its certificate
	resultRefused = "refused" // bad token, or its name is taken by a live node
)

// metrics are the scheduler's Prometheus metrics. The gauges are read
// from the state at scrape time.
type metrics struct {
	st         *state
	placements *prometheus.CounterVec
	nodesLost  prometheus.Counter
	latency    prometheus.Histogram
	// logReadersTooSlow counts GetLogs calls ended because their caller
	// did not keep up with the node.
	logReadersTooSlow prometheus.Counter
	joins             *prometheus.CounterVec
	// replayed counts the statuses sent to controllers on subscribe;
	// coalesced those replaced by a newer one before a slow controller
	// read them.
	replayed, coalesced prometheus.Counter
}

func newMetrics(st *state) *metrics {
	m := &metrics{
		st: st,
		placements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rik_scheduler_placements_total",
			Help: "Placement attempts, by result (placed, no_fit).",
		}, []string{"result"}),
		nodesLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rik_scheduler_nodes_lost_total",
			Help: "Nodes declared lost after missing their heartbeats.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "rik_scheduler_placement_latency_seconds",
			Help:    "Time from a CREATE order to the instance's placement on a node.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 12), // 100µs .. ~7min
		}),
		logReadersTooSlow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rik_scheduler_log_readers_too_slow_total",
			Help: "Log requests ended with ResourceExhausted because their caller did not keep up.",
		}),
		joins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rik_scheduler_joins_total",
			Help: "Join calls of nodes asking for a certificate, by result (joined, refused).",
		}, []string{"result"}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rik_scheduler_status_replayed_total",
			Help: "Instance statuses replayed to controllers when they (re)subscribed.",
		}),
		coalesced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rik_scheduler_status_coalesced_total",
			Help: "Instance statuses replaced by a newer one of the same instance before a controller read them.",
		}),
	}
	for _, r := range []string{resultPlaced, resultNoFit} {
		m.placements.WithLabelValues(r)
	}
	for _, r := range []string{resultJoined, resultRefused} {
		m.joins.WithLabelValues(r)
	}
	return m
}

// handler serves the metrics on their own registry (made here: the Go and
// process collectors cost more than a state that is never scraped).
func (m *metrics) handler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.placements, m.nodesLost, m.latency, m.logReadersTooSlow, m.joins, m.replayed, m.coalesced, stateCollector{m.st}, version.BuildInfo(),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

var (
	nodesDesc = prometheus.NewDesc("rik_scheduler_nodes",
		"Nodes known to the scheduler, by status (Ready, NotReady).", []string{"status"}, nil)
	instancesDesc = prometheus.NewDesc("rik_scheduler_instances",
		"Instances known to the scheduler, by state (placed, pending, parked: waiting for its node after a restart).",
		[]string{"state"}, nil)
	subscribersDesc = prometheus.NewDesc("rik_scheduler_status_subscribers",
		"Controllers subscribed to the status stream.", nil, nil)
	queuedDesc = prometheus.NewDesc("rik_scheduler_status_queued",
		"Instance statuses waiting to be sent to the controllers, all subscribers together.", nil, nil)
)

// stateCollector reports the gauges counted from the state.
type stateCollector struct{ st *state }

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- nodesDesc
	ch <- instancesDesc
	ch <- subscribersDesc
	ch <- queuedDesc
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	g := c.st.gauges()
	ch <- prometheus.MustNewConstMetric(nodesDesc, prometheus.GaugeValue, float64(g.ready), "Ready")
	ch <- prometheus.MustNewConstMetric(nodesDesc, prometheus.GaugeValue, float64(g.notReady), "NotReady")
	ch <- prometheus.MustNewConstMetric(instancesDesc, prometheus.GaugeValue, float64(g.placed), "placed")
	ch <- prometheus.MustNewConstMetric(instancesDesc, prometheus.GaugeValue, float64(g.pending), "pending")
	ch <- prometheus.MustNewConstMetric(instancesDesc, prometheus.GaugeValue, float64(g.parked), "parked")
	ch <- prometheus.MustNewConstMetric(subscribersDesc, prometheus.GaugeValue, float64(g.subscribers))
	ch <- prometheus.MustNewConstMetric(queuedDesc, prometheus.GaugeValue, float64(g.queued))
}

// gaugeValues are the counts behind the gauges.
type gaugeValues struct {
	ready, notReady         int
	placed, pending, parked int
	subscribers, queued     int
}

func (s *state) gauges() gaugeValues {
	s.mu.Lock()
	defer s.mu.Unlock()
	var g gaugeValues
	for _, n := range s.nodes {
		if n.ready {
			g.ready++
		} else {
			g.notReady++
		}
	}
	g.pending, g.parked = len(s.pending), len(s.parked)
	g.placed = len(s.insts) - g.pending - g.parked
	g.subscribers = len(s.subs)
	for sub := range s.subs {
		g.queued += sub.queued()
	}
	return g
}
