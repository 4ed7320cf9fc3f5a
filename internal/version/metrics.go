package version

import "github.com/prometheus/client_golang/prometheus"

// BuildInfo is the gauge rik_build_info{version,goversion} = 1, which every
// component serves with its metrics.
func BuildInfo() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "rik_build_info",
		Help:        "A constant 1, labelled with the build's version and Go release.",
		ConstLabels: prometheus.Labels{"version": Version, "goversion": GoVersion()},
	})
	g.Set(1)
	return g
}
