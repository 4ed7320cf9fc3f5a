package supervisor

import (
	"context"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/riklet/ledger"
	"github.com/rik-org/rik/internal/riklet/probe"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/workload"
)

// Prober runs the health checks of running instances (package probe) and
// reports to the supervisor, its probe.Sink.
type Prober interface {
	Watch(t probe.Target)
	Stop(id string)
	Close()
}

// execer is implemented by runtimes that can run a command in a running
// instance's container (pods): exec probes use it.
type execer interface {
	Exec(ctx context.Context, id, container string, cmd []string) (code int, output string, err error)
}

var _ probe.Sink = (*Supervisor)(nil)

// readyWhenRunning reports whether an instance is ready as soon as it
// runs: it has no readiness probe.
func readyWhenRunning(w workload.Workload) bool { return !probe.HasReadiness(probe.Of(w)) }

// watchProbes starts probing a running instance at ip, during its start
// number gen.
func (s *Supervisor) watchProbes(rt runtime.Runtime, inst runtime.Instance, ip string, gen int) {
	probes := probe.Of(inst.Workload)
	if len(probes) == 0 {
		return
	}
	t := probe.Target{ID: inst.ID, Gen: gen, Host: ip, Probes: probes}
	if ex, ok := rt.(execer); ok {
		id := inst.ID
		t.Exec = func(ctx context.Context, container string, cmd []string) (int, string, error) {
			return ex.Exec(ctx, id, container, cmd)
		}
	}
	s.probes.Watch(t)
}

// rewatchProbes probes id again, at its new address ip.
func (s *Supervisor) rewatchProbes(e ledger.Entry, ip string) {
	rt := s.runtimeFor(e.Kind)
	inst, err := instanceOf(e)
	if rt == nil || err != nil {
		return
	}
	s.watchProbes(rt, inst, ip, s.epochOf(e.InstanceID))
}

// epochOf is the start number of id's current run.
func (s *Supervisor) epochOf(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rs := s.runs[id]; rs != nil {
		return rs.epoch
	}
	return -1
}

// runningNow returns id's entry if it runs, in its start number gen.
func (s *Supervisor) runningNow(id string, gen int) (ledger.Entry, bool) {
	if s.epochOf(id) != gen {
		return ledger.Entry{}, false
	}
	e, ok := s.led.Get(id)
	return e, ok && e.Last.Status == workload.StatusRunning
}

// ProbeReady implements probe.Sink: the readiness of a running instance
// is reported whenever it changes.
func (s *Supervisor) ProbeReady(id string, gen int, ready bool) {
	s.queue.do(id, func() {
		e, ok := s.runningNow(id, gen)
		if !ok || e.Last.Ready == ready {
			return
		}
		s.led.Update(id, func(e *ledger.Entry) { e.Last.Ready = ready })
		s.log.Info("instance readiness changed", "instance", id, "name", e.Name, "ready", ready)
	})
}

// ProbeFailed implements probe.Sink: a running instance whose liveness
// probe failed is stopped and restarted under its restart policy (Never:
// it ends FAILED), with reason api.ReasonLivenessProbeFailed.
func (s *Supervisor) ProbeFailed(id string, gen int, detail string) {
	s.queue.do(id, func() {
		if e, ok := s.runningNow(id, gen); ok {
			s.livenessFailed(e, detail)
		}
	})
}

func (s *Supervisor) livenessFailed(e ledger.Entry, detail string) {
	msg := "liveness probe failed: " + detail
	log := s.log.With("instance", e.InstanceID, "name", e.Name)
	s.probes.Stop(e.InstanceID)
	inst, err := instanceOf(e)
	if rt := s.runtimeFor(e.Kind); rt != nil {
		// Stopped now, not after the backoff: it is broken.
		if serr := s.stop(rt, inst); serr != nil {
			log.Warn("stopping instance after liveness failure", "error", serr)
		}
	}
	if err == nil && inst.Workload.RestartPolicy == workload.RestartNever {
		log.Info("instance failed its liveness probe", "detail", detail)
		s.setStatus(e.InstanceID, ledger.LastStatus{
			Status: workload.StatusFailed, Reason: api.ReasonLivenessProbeFailed, Message: msg,
			IP: e.Last.IP, Ports: e.Last.Ports, Timings: e.Last.Timings,
		})
		return
	}
	s.scheduleRestart(e.InstanceID, api.ReasonLivenessProbeFailed, msg, nil)
}
