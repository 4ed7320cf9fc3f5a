// Package metrics is the riklet's Prometheus metrics: its instances by
// state (read from the ledger at scrape time), the durations of starts and
// of their phases (image pull, rootfs fetch, network programming, VM
// boot), restarts and failed starts. The supervisor reports starts and
// restarts through its Observer interface, which Metrics implements.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rik-org/rik/internal/riklet/ledger"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/riklet/runtime/function"
	"github.com/rik-org/rik/internal/version"
	"github.com/rik-org/rik/internal/workload"
)

// Timing keys of the pod runtime's Status.Timings (milliseconds since
// Start was asked; internal/riklet/runtime/pod marks them).
const (
	podPulled  = "pulled"
	podNetwork = "network"
)

// buckets of the durations, in seconds: 5ms to ~10min.
var buckets = prometheus.ExponentialBuckets(0.005, 2.5, 14)

// Metrics are a riklet's metrics. The zero value is not usable: New.
type Metrics struct {
	reg       *prometheus.Registry
	start     *prometheus.HistogramVec // by kind
	failures  *prometheus.CounterVec   // by kind
	restarts  *prometheus.CounterVec   // by kind
	imagePull prometheus.Histogram
	rootfs    prometheus.Histogram
	vmBoot    prometheus.Histogram
	sdn       *prometheus.HistogramVec // by kind
}

// Lister lists the instances of the node (the ledger).
type Lister interface{ List() []ledger.Entry }

// New makes the metrics; the instance gauges count what l lists.
func New(l Lister) *Metrics {
	hist := func(name, help string) prometheus.HistogramOpts {
		return prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		start: prometheus.NewHistogramVec(hist("rik_riklet_start_duration_seconds",
			"Time to start an instance, from the order to RUNNING (image pull or rootfs fetch included), by kind (pod, function)."), []string{"kind"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rik_riklet_start_failures_total",
			Help: "Starts that failed, by kind."}, []string{"kind"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rik_riklet_restarts_total",
			Help: "Instances restarted after they exited or failed, by kind."}, []string{"kind"}),
		imagePull: prometheus.NewHistogram(hist("rik_riklet_image_pull_duration_seconds",
			"Time to pull a pod's images (cached layers are not fetched again); millisecond resolution.")),
		rootfs: prometheus.NewHistogram(hist("rik_riklet_rootfs_fetch_duration_seconds",
			"Time to fetch and prepare a Function's root filesystem; millisecond resolution.")),
		vmBoot: prometheus.NewHistogram(hist("rik_riklet_vm_boot_duration_seconds",
			"Time from the microVM monitor's start to the guest running; millisecond resolution.")),
		sdn: prometheus.NewHistogramVec(hist("rik_riklet_sdn_programming_duration_seconds",
			"Time to program an instance's network (addresses, devices, firewall rules), by kind; millisecond resolution."), []string{"kind"}),
	}
	for _, k := range []workload.Kind{workload.KindPod, workload.KindFunction} {
		m.start.WithLabelValues(string(k))
		m.failures.WithLabelValues(string(k))
		m.restarts.WithLabelValues(string(k))
		m.sdn.WithLabelValues(string(k))
	}
	m.reg.MustRegister(m.start, m.failures, m.restarts, m.imagePull, m.rootfs, m.vmBoot, m.sdn,
		instances{l}, version.BuildInfo(),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Started records a start of kind that took took and ended with st and
// err (supervisor.Observer).
func (m *Metrics) Started(kind workload.Kind, took time.Duration, st runtime.Status, err error) {
	if err != nil || st.Phase == runtime.PhaseFailed || st.Phase == runtime.PhaseExited {
		m.failures.WithLabelValues(string(kind)).Inc()
		return
	}
	m.start.WithLabelValues(string(kind)).Observe(took.Seconds())
	for _, p := range phases(kind, st.Timings) {
		switch p.name {
		case phaseImagePull:
			m.imagePull.Observe(p.took.Seconds())
		case phaseRootfs:
			m.rootfs.Observe(p.took.Seconds())
		case phaseSDN:
			m.sdn.WithLabelValues(string(kind)).Observe(p.took.Seconds())
		case phaseVMBoot:
			m.vmBoot.Observe(p.took.Seconds())
		}
	}
}

// Restarting records a restart of an instance of kind
// (supervisor.Observer).
func (m *Metrics) Restarting(kind workload.Kind) { m.restarts.WithLabelValues(string(kind)).Inc() }

// Handler serves the metrics (/metrics).
func (m *Metrics) Handler() http.Handler { return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}) }

// Phases of a start, measured by the runtimes.
const (
	phaseImagePull = "image_pull"
	phaseRootfs    = "rootfs_fetch"
	phaseSDN       = "sdn"
	phaseVMBoot    = "vm_boot"
)

type phase struct {
	name string
	took time.Duration
}

// phases derives the phase durations of a start from the runtime's
// timings (milliseconds since the start, at the end of each step). A
// step missing from the timings is left out.
func phases(kind workload.Kind, t map[string]int64) []phase {
	var out []phase
	span := func(name, from, to string) {
		end, ok := t[to]
		if !ok {
			return
		}
		var begin int64
		if from != "" {
			if begin, ok = t[from]; !ok {
				return
			}
		}
		if end >= begin {
			out = append(out, phase{name, time.Duration(end-begin) * time.Millisecond})
		}
	}
	switch kind {
	case workload.KindPod:
		span(phaseImagePull, "", podPulled)
		span(phaseSDN, podPulled, podNetwork)
	case workload.KindFunction:
		span(phaseRootfs, "", function.TimingFetched)
		span(phaseSDN, function.TimingFetched, function.TimingNetworkReady)
		span(phaseVMBoot, function.TimingVMMStarted, function.TimingGuestRunning)
	}
	return out
}

var instancesDesc = prometheus.NewDesc("rik_riklet_instances",
	"Instances the node holds, by kind and state (last status reported).", []string{"kind", "state"}, nil)

// instances counts the ledger's entries by kind and state at scrape time.
type instances struct{ l Lister }

func (c instances) Describe(ch chan<- *prometheus.Desc) { ch <- instancesDesc }

func (c instances) Collect(ch chan<- prometheus.Metric) {
	type key struct {
		kind  workload.Kind
		state workload.Status
	}
	counts := map[key]int{}
	for _, k := range []workload.Kind{workload.KindPod, workload.KindFunction} {
		for _, s := range []workload.Status{workload.StatusCreating, workload.StatusRunning, workload.StatusFailed} {
			counts[key{k, s}] = 0 // the usual series exist, at 0
		}
	}
	for _, e := range c.l.List() {
		counts[key{e.Kind, e.Last.Status}]++
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(instancesDesc, prometheus.GaugeValue, float64(n), string(k.kind), string(k.state))
	}
}

// Serve serves the metrics at /metrics and a liveness answer at /healthz
// on l until ctx is done; it closes l.
func (m *Metrics) Serve(ctx context.Context, l net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintln(w, "ok")
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
		defer stop()
		if hs.Shutdown(sctx) != nil {
			hs.Close()
		}
	}()
	err := hs.Serve(l)
	cancel()
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("serving metrics on %s: %w", l.Addr(), err)
}
