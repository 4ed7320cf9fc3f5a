package supervisor

import (
	"context"
	"errors"
	"fmt"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/riklet/ledger"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/workload"
)

// Final statuses of the instances the node stops for good.
var (
	destroyed     = ledger.LastStatus{Status: workload.StatusTerminated, Reason: api.ReasonDestroyed}
	stoppedOnExit = ledger.LastStatus{Status: workload.StatusTerminated, Reason: api.ReasonDestroyed, Message: "stopped on exit"}
)

// Create starts an instance placed on this node (definition is its
// workload, JSON), after every operation queued before for it. A CREATE
// of an instance the node owns re-reports it.
func (s *Supervisor) Create(id, workloadID, name string, definition []byte) {
	if s.refused(id, workloadID, false) {
		return
	}
	s.queue.do(id, func() { s.create(id, workloadID, name, definition) })
}

// Destroy stops an instance and forgets it. It does not wait for a start
// in progress (an image pull may be long), nor begin one queued before.
func (s *Supervisor) Destroy(id, workloadID string) {
	if s.refused(id, workloadID, true) {
		return
	}
	s.probes.Stop(id)
	s.mu.Lock()
	rs := s.runLocked(id) // forgotten by destroy if id is not owned
	rs.aborted = true
	if rs.cancelStart != nil {
		rs.cancelStart()
	}
	s.mu.Unlock()
	s.queue.do(id, func() { s.destroy(id, workloadID) })
}

// refused reports whether id is invalid, reporting the order refused:
// runtimes name files and devices after it, it is never passed on.
func (s *Supervisor) refused(id, workloadID string, destroy bool) bool {
	err := workload.ValidInstanceID(id)
	if err == nil {
		return false
	}
	s.log.Warn("order with an invalid instance id", "error", err, "destroy", destroy)
	if id == "" {
		return true
	}
	last := ledger.LastStatus{Status: workload.StatusFailed, Reason: api.ReasonInvalidInstanceID, Message: err.Error()}
	if destroy {
		last = ledger.LastStatus{Status: workload.StatusTerminated, Reason: api.ReasonDestroyed, Message: "such an instance cannot run here"}
	}
	s.led.Send(id, workloadID, last)
	return true
}

// create records an instance and starts it.
func (s *Supervisor) create(id, workloadID, name string, def []byte) {
	log := s.log.With("instance", id, "name", name)
	if e, ok := s.led.Report(id); ok {
		log.Debug("create of an owned instance: re-reporting", "status", e.Last.Status)
		return
	}
	failed := func(reason, msg string) {
		log.Warn("cannot create instance", "reason", reason, "error", msg)
		s.led.Send(id, workloadID, ledger.LastStatus{Status: workload.StatusFailed, Reason: reason, Message: msg})
	}
	w, err := workload.Parse(def)
	if err != nil {
		failed(api.ReasonInvalidDefinition, err.Error())
		return
	}
	rt := s.runtimeFor(w.Kind)
	if rt == nil {
		failed(api.ReasonNoRuntime, noRuntimeMessage(w.Kind))
		return
	}
	if name == "" {
		name = id
	}
	if err := workload.ValidName(name); err != nil {
		failed(api.ReasonInvalidDefinition, fmt.Sprintf("instance_name %q: must be a DNS label", name))
		return
	}
	s.mu.Lock()
	if rs := s.runs[id]; rs == nil || !rs.aborted {
		s.runs[id] = &run{} // else a Destroy is queued: start aborts
	}
	s.mu.Unlock()
	// On disk before starting: a crash mid-start is cleaned up by Recover.
	e := ledger.Entry{
		InstanceID: id, Name: name, WorkloadID: workloadID, Kind: w.Kind, Definition: def,
		Last: ledger.LastStatus{Status: workload.StatusCreating}, CreatedAt: s.cfg.Clock.Now().UTC(),
	}
	if err := s.led.Add(e); err != nil {
		s.forgetRun(id)
		failed(api.ReasonLedgerError, err.Error())
		return
	}
	log.Info("creating instance", "kind", w.Kind)
	inst := runtime.Instance{ID: id, Name: name, WorkloadID: workloadID, Workload: w}
	if st, err := s.start(rt, inst); err != nil {
		if s.ctx.Err() != nil || errors.Is(err, errAborted) {
			return // shutting down (Recover settles it), or the Destroy queued next does
		}
		log.Warn("instance failed to start", "error", err)
		s.setStatus(id, ledger.LastStatus{Status: workload.StatusFailed, Reason: failureReason(st, err), Message: err.Error()})
	}
}

// start starts inst; on success the instance is reported RUNNING. On
// failure everything is stopped again and the error returned.
func (s *Supervisor) start(rt runtime.Runtime, inst runtime.Instance) (runtime.Status, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.StartTimeout)
	defer cancel()
	rs, err := s.beginStart(inst.ID, cancel)
	if err != nil {
		return runtime.Status{}, err
	}
	began := s.cfg.Clock.Now()
	st, err := rt.Start(ctx, inst)
	if s.ctx.Err() == nil { // not a start cut short by the riklet stopping
		s.cfg.Observer.Started(rt.Kind(), s.cfg.Clock.Now().Sub(began), st, err)
	}
	ran := err == nil && st.Phase != runtime.PhaseFailed && st.Phase != runtime.PhaseExited
	if s.endStart(rs, ran) && err != nil {
		err = fmt.Errorf("%w (%w)", errAborted, err)
	}
	if err == nil && !ran {
		err = fmt.Errorf("runtime reported %s: %s", st.Phase, st.Message)
	}
	if err != nil {
		if s.ctx.Err() != nil {
			return st, err
		}
		if serr := s.stop(rt, inst); serr != nil {
			s.log.Warn("rolling back failed start", "instance", inst.ID, "error", serr)
		}
		return st, fmt.Errorf("starting %s: %w", inst.Name, err)
	}
	ready := readyWhenRunning(inst.Workload)
	s.led.Update(inst.ID, func(e *ledger.Entry) {
		e.Last = ledger.LastStatus{Status: workload.StatusRunning, IP: st.IP, Ports: st.Ports, Timings: st.Timings, Ready: ready}
	})
	s.log.Info("instance running", "instance", inst.ID, "name", inst.Name, "ip", st.IP)
	if rs != nil {
		s.watchProbes(rt, inst, st.IP, s.epochOf(inst.ID))
	}
	return st, nil
}

// beginStart counts a start of id and lets a Destroy cancel it; it fails
// with errAborted when a Destroy is queued already.
func (s *Supervisor) beginStart(id string, cancel context.CancelFunc) (*run, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := s.runs[id]
	if rs == nil {
		return nil, nil
	}
	if rs.aborted {
		return nil, errAborted
	}
	rs.epoch++
	rs.cancelStart = cancel
	return rs, nil
}

// endStart ends a start begun with beginStart, recording when the instance
// started if it runs; it reports whether a Destroy came meanwhile.
func (s *Supervisor) endStart(rs *run, ran bool) (aborted bool) {
	if rs == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rs.cancelStart = nil
	if ran {
		rs.started = s.cfg.Clock.Now()
	}
	return rs.aborted
}

func (s *Supervisor) stop(rt runtime.Runtime, inst runtime.Instance) error {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.StopTimeout)
	defer cancel()
	if err := rt.Stop(ctx, inst); err != nil {
		return fmt.Errorf("stopping %s: %w", inst.Name, err)
	}
	return nil
}

// failureReason is the short cause of a failed start.
func failureReason(st runtime.Status, err error) string {
	if st.Reason != "" {
		return st.Reason
	}
	var r interface{ Reason() string }
	if errors.As(err, &r) && r.Reason() != "" {
		return r.Reason()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return api.ReasonStartTimeout
	}
	return api.ReasonStartFailed
}

// destroy stops an instance and forgets it.
func (s *Supervisor) destroy(id, workloadID string) {
	if _, ok := s.led.Get(id); !ok {
		s.forgetRun(id) // the mark Destroy left
		s.led.Send(id, workloadID, ledger.LastStatus{Status: workload.StatusTerminated, Reason: api.ReasonDestroyed, Message: "not on this node"})
		return
	}
	e, _ := s.led.Update(id, func(e *ledger.Entry) {
		e.Last.Status, e.Last.Reason, e.Last.Message = workload.StatusDestroying, "", ""
	})
	s.finishDestroy(e)
}

// forgetter is implemented by runtimes that keep something of a stopped
// instance (its logs) until told the instance is gone for good.
type forgetter interface{ Forget(id string) error }

// finishDestroy stops a DESTROYING instance, removes it from the ledger and
// reports it TERMINATED (api.ReasonDestroyed). If stopping fails, or there
// is no runtime to stop it (it may still run), it stays DESTROYING and
// stopping is retried with backoff.
func (s *Supervisor) finishDestroy(e ledger.Entry) {
	log := s.log.With("instance", e.InstanceID, "name", e.Name)
	rt := s.runtimeFor(e.Kind)
	err := errors.New(noRuntimeMessage(kindOf(e.Kind)) + " to stop it")
	if rt != nil {
		inst, _ := instanceOf(e) // a definition that no longer parses still has an id to stop
		err = s.stop(rt, inst)
	}
	if err != nil {
		if s.ctx.Err() != nil {
			return
		}
		log.Error("destroying instance", "error", err)
		s.led.Update(e.InstanceID, func(e *ledger.Entry) { e.Last.Message = err.Error() })
		s.retryDestroy(e.InstanceID)
		return
	}
	// Stop keeps what a restart needs (logs); a destroyed instance needs
	// nothing more.
	if f, ok := rt.(forgetter); ok {
		if err := f.Forget(e.InstanceID); err != nil {
			log.Warn("forgetting destroyed instance", "error", err)
		}
	}
	if !s.led.Remove(e.InstanceID, destroyed) {
		return
	}
	s.forgetRun(e.InstanceID)
	log.Info("instance destroyed")
}

// retryDestroy tries destroying again after a backoff delay.
func (s *Supervisor) retryDestroy(id string) {
	s.mu.Lock()
	rs := s.runLocked(id)
	delay := s.backoff(rs.step)
	rs.step++
	s.mu.Unlock()
	s.queue.after(delay, id, func() {
		if e, ok := s.led.Get(id); ok && e.Last.Status == workload.StatusDestroying {
			s.finishDestroy(e)
		}
	})
}
