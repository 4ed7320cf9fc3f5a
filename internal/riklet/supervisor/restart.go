package supervisor

import (
	"errors"
	"fmt"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/riklet/backoff"
	"github.com/rik-org/rik/internal/riklet/ledger"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/workload"
)

// Report is the runtime.Reporter of every runtime: progress while an
// instance is created, a new address, and exits, to which the restart
// policy applies.
func (s *Supervisor) Report(st runtime.Status) {
	id := st.InstanceID
	switch st.Phase {
	case runtime.PhaseCreating:
		s.led.Progress(id, st.Message)
	case runtime.PhaseExited, runtime.PhaseFailed:
		epoch, held := s.holdExit(st)
		if !held {
			s.queue.do(id, func() { s.exited(st, epoch) })
		}
	case runtime.PhaseRunning:
		s.queue.do(id, func() {
			e, ok := s.led.Get(id)
			if ok && e.Last.Status == workload.StatusRunning && st.IP != "" && st.IP != e.Last.IP {
				s.led.Update(id, func(e *ledger.Entry) { e.Last.IP = st.IP })
				s.rewatchProbes(e, st.IP)
			}
		})
	}
}

// holdExit keeps an exit reported while its instance is being recovered,
// to handle it once it is; otherwise it returns the start number during
// which the exit was seen (-1 for an instance not known).
func (s *Supervisor) holdExit(st runtime.Status) (epoch int, held bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := s.runs[st.InstanceID]
	if rs == nil {
		return -1, false
	}
	if rs.recovering {
		rs.held = &st
		return 0, true
	}
	return rs.epoch, false
}

// exited handles the end of a running instance's process, reported while
// the instance was in its start number epoch.
func (s *Supervisor) exited(st runtime.Status, epoch int) {
	e, ok := s.led.Get(st.InstanceID)
	s.mu.Lock()
	rs := s.runs[st.InstanceID]
	current := rs != nil && rs.epoch == epoch
	s.mu.Unlock()
	if !ok || !current || e.Last.Status != workload.StatusRunning {
		s.log.Debug("exit of an instance not running ignored", "instance", st.InstanceID)
		return
	}
	s.applyExit(e, st)
}

// applyExit applies the restart policy of e to an exit (or failure).
func (s *Supervisor) applyExit(e ledger.Entry, st runtime.Status) {
	s.probes.Stop(e.InstanceID)
	log := s.log.With("instance", e.InstanceID, "name", e.Name)
	code := 1
	if st.ExitCode != nil {
		code = *st.ExitCode
	}
	inst, err := instanceOf(e)
	if err != nil {
		log.Error("instance exited and cannot be restarted", "error", err)
		s.setStatus(e.InstanceID, ledger.LastStatus{Status: workload.StatusFailed, Reason: api.ReasonInvalidDefinition, Message: err.Error(), ExitCode: st.ExitCode})
		return
	}
	out := decideExit(inst.Workload.RestartPolicy, code)
	if st.Phase == runtime.PhaseFailed && st.ExitCode == nil && !out.restart {
		out = exitOutcome{status: workload.StatusFailed, reason: api.ReasonError}
	}
	if !out.restart {
		reason := out.reason
		if code != 0 && st.Reason != "" {
			reason = st.Reason
		}
		log.Info("instance ended", "code", code, "reason", reason)
		s.setStatus(e.InstanceID, ledger.LastStatus{
			Status: out.status, Reason: reason, Message: st.Message, ExitCode: st.ExitCode,
			IP: e.Last.IP, Ports: e.Last.Ports, Timings: e.Last.Timings,
		})
		return
	}
	why := fmt.Sprintf("exited with code %d", code)
	if st.ExitCode == nil {
		why = "failed"
		if st.Message != "" {
			why += ": " + st.Message
		}
	}
	s.scheduleRestart(e.InstanceID, api.ReasonBackOff, why, st.ExitCode)
}

// exitOutcome is what the supervisor does when an instance's process ended.
type exitOutcome struct {
	restart bool
	status  workload.Status // final status when not restarting
	reason  string
}

// decideExit applies a restart policy to an exit code. An empty policy is
// Always (the default).
func decideExit(policy workload.RestartPolicy, code int) exitOutcome {
	switch {
	case policy == workload.RestartNever:
	case policy == workload.RestartOnFailure && code == 0:
	default: // Always, OnFailure with a failure, empty or unknown policy
		return exitOutcome{restart: true}
	}
	if code == 0 {
		return exitOutcome{status: workload.StatusTerminated, reason: api.ReasonCompleted}
	}
	return exitOutcome{status: workload.StatusFailed, reason: api.ReasonError}
}

// backoff is the delay before the step-th consecutive restart (0-based).
func (s *Supervisor) backoff(step int) time.Duration {
	return backoff.Exponential(step, s.cfg.RestartBase, s.cfg.RestartMax)
}

// scheduleRestart reports the instance CREATING (with reason, and why it
// restarts as the message), counts the restart and restarts it after the
// backoff delay.
func (s *Supervisor) scheduleRestart(id, reason, why string, code *int) {
	s.probes.Stop(id)
	s.mu.Lock()
	rs := s.runLocked(id)
	if !rs.started.IsZero() && s.cfg.Clock.Now().Sub(rs.started) >= s.cfg.RestartReset {
		rs.step = 0
	}
	delay := s.backoff(rs.step)
	rs.step++
	s.genSeq++
	rs.gen = s.genSeq
	gen := rs.gen
	s.mu.Unlock()

	e, ok := s.led.Update(id, func(e *ledger.Entry) {
		e.Restarts++
		e.Last = ledger.LastStatus{Status: workload.StatusCreating, Reason: reason,
			Message: fmt.Sprintf("%s, restarting in %s", why, delay), ExitCode: code}
	})
	if !ok {
		return
	}
	s.cfg.Observer.Restarting(e.Kind)
	s.log.Info("restarting instance", "instance", id, "name", e.Name, "why", why, "in", delay, "restarts", e.Restarts)
	s.queue.after(delay, id, func() { s.restart(id, gen) })
}

// restart stops and starts an instance again, unless it was destroyed or
// restarted otherwise meanwhile.
func (s *Supervisor) restart(id string, gen int) {
	e, ok := s.led.Get(id)
	s.mu.Lock()
	rs := s.runs[id]
	valid := ok && rs != nil && rs.gen == gen && e.Last.Status == workload.StatusCreating
	s.mu.Unlock()
	if !valid {
		return
	}
	rt := s.runtimeFor(e.Kind)
	inst, err := instanceOf(e)
	if rt == nil || err != nil {
		if err == nil {
			err = errors.New(noRuntimeMessage(e.Kind))
		}
		s.setStatus(id, ledger.LastStatus{Status: workload.StatusFailed, Reason: api.ReasonRestartFailed, Message: err.Error()})
		return
	}
	if err := s.stop(rt, inst); err != nil {
		s.log.Warn("stopping before restart", "instance", id, "error", err)
	}
	if _, err := s.start(rt, inst); err != nil {
		if s.ctx.Err() != nil || errors.Is(err, errAborted) {
			return
		}
		s.scheduleRestart(id, api.ReasonBackOff, err.Error(), nil)
	}
}
