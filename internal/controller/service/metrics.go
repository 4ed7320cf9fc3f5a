package service

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rik-org/rik/internal/workload"
)

var allStatuses = []workload.Status{
	workload.StatusUnknown, workload.StatusPending, workload.StatusCreating, workload.StatusRunning,
	workload.StatusFailed, workload.StatusDestroying, workload.StatusTerminated,
}

// metrics are what the service counts: the instances in the store by
// status (from its watch) and the watches established.
type metrics struct {
	instances     *prometheus.GaugeVec
	watches       prometheus.Counter
	eventsDropped prometheus.Counter
}

// newMetrics makes the metrics, registered with reg unless nil; the
// number of event subscribers is read from events.
func newMetrics(reg prometheus.Registerer, events *feed) *metrics {
	m := &metrics{
		instances: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rik_controller_instances",
			Help: "Instances in the store, by status."}, []string{"status"}),
		watches: prometheus.NewCounter(prometheus.CounterOpts{Name: "rik_controller_store_watches_total",
			Help: "Watches of the store's records established (the first, and one after each break)."}),
		eventsDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "rik_controller_events_dropped_total",
			Help: "Events not kept in the history: too many were waiting to be written."}),
	}
	subscribers := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rik_controller_event_subscribers",
		Help: "Clients following the event stream."}, func() float64 { return float64(events.count()) })
	if reg != nil {
		reg.MustRegister(m.instances, m.watches, m.eventsDropped, subscribers)
	}
	for _, st := range allStatuses {
		m.instances.WithLabelValues(string(st)).Set(0)
	}
	return m
}

func (m *metrics) resetInstances(cache map[string]InstanceRecord) {
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
