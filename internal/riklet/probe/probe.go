// Package probe runs the health checks of the instances a node runs:
// readiness (is the instance ready to serve?) and liveness (is it still
// alive, or must it be restarted?), as declared by the workload's
// healthcheck (workload.Healthcheck). An http check GETs a path and wants
// a 2xx or 3xx answer, a tcp check wants a connection to open, an exec
// check wants a command run inside a pod's container to exit 0.
//
// A Prober runs one goroutine per probed instance, checking its probes in
// turn on the injected clock; http and tcp checks are made by the riklet
// itself (no process per check). What it finds goes to a Sink: readiness
// when it changes, and a liveness probe that failed FailureThreshold times
// in a row (the instance is then no longer probed until watched again).
package probe

import (
	"fmt"
	"time"

	"github.com/rik-org/rik/internal/workload"
)

// Defaults of a probe's settings (workload.Probe).
const (
	DefaultInterval         = 10 * time.Second
	DefaultTimeout          = time.Second
	DefaultFailureThreshold = 3
	// maxSeconds bounds a setting in seconds (one day): nothing overflows.
	maxSeconds = 24 * 60 * 60
	// maxThreshold bounds FailureThreshold.
	maxThreshold = 1000
)

// Kind says what a probe decides.
type Kind string

const (
	Readiness Kind = "readiness"
	Liveness  Kind = "liveness"
)

// Probe is one health check of an instance.
type Probe struct {
	Kind      Kind
	Container string // pods: the container it belongs to (exec runs there); "" for a Function
	Spec      workload.Probe
}

// name says which probe it is, for messages: "container web: " or "".
func (p Probe) name() string {
	if p.Container == "" {
		return ""
	}
	return "container " + p.Container + ": "
}

// Settings are a probe's timings with their defaults applied.
type Settings struct {
	Interval         time.Duration
	Timeout          time.Duration
	FailureThreshold int
	InitialDelay     time.Duration
}

// SettingsOf applies the defaults to p: a zero or negative value takes its
// default, an absurd one is bounded.
func SettingsOf(p workload.Probe) Settings {
	secs := func(v int, def time.Duration) time.Duration {
		switch {
		case v <= 0:
			return def
		case v > maxSeconds:
			v = maxSeconds
		}
		return time.Duration(v) * time.Second
	}
	s := Settings{
		Interval:         secs(p.IntervalSeconds, DefaultInterval),
		Timeout:          secs(p.TimeoutSeconds, DefaultTimeout),
		FailureThreshold: min(p.FailureThreshold, maxThreshold),
		InitialDelay:     secs(p.InitialDelaySeconds, 0),
	}
	if s.FailureThreshold <= 0 {
		s.FailureThreshold = DefaultFailureThreshold
	}
	return s
}

// Of lists the probes of a workload: each container's (pods) or the
// function's, readiness before liveness. A probe with no check (none of
// http, tcp, exec) is no probe.
func Of(w workload.Workload) []Probe {
	var out []Probe
	add := func(container string, hc *workload.Healthcheck) {
		if hc == nil {
			return
		}
		for _, p := range []struct {
			kind Kind
			spec *workload.Probe
		}{{Readiness, hc.Readiness}, {Liveness, hc.Liveness}} {
			if p.spec != nil && (p.spec.HTTP != nil || p.spec.TCP != nil || p.spec.Exec != nil) {
				out = append(out, Probe{Kind: p.kind, Container: container, Spec: *p.spec})
			}
		}
	}
	if w.Spec.Function != nil {
		add("", w.Spec.Function.Healthcheck)
	}
	for _, c := range w.Spec.Containers {
		add(c.Name, c.Healthcheck)
	}
	return out
}

// HasReadiness reports whether any of probes is a readiness probe: an
// instance without one is ready as soon as it runs.
func HasReadiness(probes []Probe) bool {
	for _, p := range probes {
		if p.Kind == Readiness {
			return true
		}
	}
	return false
}

// state is what a probe's recent checks say. A readiness probe starts
// failing (not ready until a check passes), a liveness probe passing (alive
// until FailureThreshold checks in a row fail).
type state struct {
	ok    bool
	fails int // consecutive failed checks
}

func initialState(k Kind) state { return state{ok: k == Liveness} }

// observe records one check: a success makes the probe pass at once,
// threshold consecutive failures make it fail.
func (s state) observe(passed bool, threshold int) state {
	if passed {
		return state{ok: true}
	}
	s.fails++
	if s.fails >= threshold {
		s.ok = false
	}
	return s
}

// failedDetail is the message of a probe that failed with err.
func failedDetail(p Probe, fails int, err error) string {
	return fmt.Sprintf("%s%v (%d times in a row)", p.name(), err, fails)
}
