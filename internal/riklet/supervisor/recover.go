package supervisor

import (
	"context"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/riklet/ledger"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/workload"
)

// Recover lets every runtime adopt what the ledger says the node owns and
// remove what it does not, and settles every entry: running ones are
// RUNNING again, ended ones go through their restart policy, those being
// destroyed are destroyed. An entry of a kind the node has no runtime for
// is left as it is (it may still run). If ctx ends meanwhile, what a
// runtime saw is partial: the rest is left for the next start to settle.
func (s *Supervisor) Recover(ctx context.Context) {
	entries := s.led.List()
	s.mu.Lock()
	for _, e := range entries {
		s.runs[e.InstanceID] = &run{recovering: true}
	}
	runtimes := make(map[workload.Kind]runtime.Runtime, len(s.runtimes))
	for k, rt := range s.runtimes {
		runtimes[k] = rt
	}
	s.mu.Unlock()
	// An exit reported before its entry is settled (the process ended
	// right after it was adopted) is handled after, not lost nor
	// overwritten by the settling.
	defer s.releaseHeld(entries)

	byKind := map[workload.Kind][]ledger.Entry{}
	for _, e := range entries {
		k := kindOf(e.Kind)
		if runtimes[k] == nil {
			s.unsettled(e)
			continue
		}
		byKind[k] = append(byKind[k], e)
	}
	// Every runtime recovers, even with nothing owned: it removes leftovers.
	for k, rt := range runtimes {
		if !s.recoverKind(ctx, k, rt, byKind[k]) {
			return
		}
	}
}

// recoverKind recovers the entries of one runtime; it reports false when
// ctx ended meanwhile (nothing is settled then).
func (s *Supervisor) recoverKind(ctx context.Context, k workload.Kind, rt runtime.Runtime, entries []ledger.Entry) bool {
	owned := make([]runtime.Instance, 0, len(entries))
	for _, e := range entries {
		inst, err := instanceOf(e)
		if err != nil {
			s.log.Warn("ledger entry with a bad definition", "instance", e.InstanceID, "error", err)
		}
		owned = append(owned, inst)
	}
	sts, err := rt.Recover(ctx, owned)
	if ctx.Err() != nil {
		// Shutting down: what Recover saw is partial (owned instances
		// would look lost). The next start settles every entry.
		s.log.Info("recovery interrupted", "kind", k)
		return false
	}
	if err != nil {
		s.log.Error("recovering instances", "kind", k, "error", err)
	}
	byID := map[string]runtime.Status{}
	for _, st := range sts {
		byID[st.InstanceID] = st
	}
	for _, e := range entries {
		s.settle(rt, e, byID)
	}
	return true
}

// releaseHeld ends the recovery of entries, handling the exits held
// meanwhile.
func (s *Supervisor) releaseHeld(entries []ledger.Entry) {
	for _, e := range entries {
		s.mu.Lock()
		rs := s.runs[e.InstanceID]
		var held *runtime.Status
		epoch := 0
		if rs != nil {
			rs.recovering = false
			held, rs.held, epoch = rs.held, nil, rs.epoch
		}
		s.mu.Unlock()
		if held != nil {
			s.queue.do(e.InstanceID, func() { s.exited(*held, epoch) })
		}
	}
}

// unsettled handles an owned instance of a kind this node has no runtime
// for (now: it failed to start, or is no longer configured). What it runs
// may still run: the entry is neither failed nor dropped. A destroy is
// retried until a runtime can stop it; otherwise its last status stays,
// saying why it cannot be checked.
func (s *Supervisor) unsettled(e ledger.Entry) {
	k := kindOf(e.Kind)
	s.log.Warn("owned instance of a kind without runtime: left as it is", "instance", e.InstanceID, "kind", e.Kind, "status", e.Last.Status)
	if e.Last.Status == workload.StatusDestroying {
		s.queue.do(e.InstanceID, func() { s.finishDestroy(e) })
		return
	}
	if !e.Last.Status.Terminal() {
		s.led.Update(e.InstanceID, func(e *ledger.Entry) {
			e.Last.Message = noRuntimeMessage(k) + " now: its state cannot be checked"
		})
	}
}

// settle sets the status of one recovered entry.
func (s *Supervisor) settle(rt runtime.Runtime, e ledger.Entry, byID map[string]runtime.Status) {
	switch e.Last.Status {
	case workload.StatusFailed, workload.StatusTerminated:
		return // ended before: kept until DESTROY
	case workload.StatusDestroying:
		s.queue.do(e.InstanceID, func() { s.finishDestroy(e) })
		return
	}
	st, ok := byID[e.InstanceID]
	if !ok {
		st = runtime.Status{InstanceID: e.InstanceID, Phase: runtime.PhaseFailed, Reason: api.ReasonLost, Message: "not found after riklet restart"}
	}
	if st.Phase == runtime.PhaseRunning {
		s.mu.Lock()
		s.runLocked(e.InstanceID).started = s.cfg.Clock.Now()
		s.mu.Unlock()
		inst, err := instanceOf(e)
		ready := err == nil && readyWhenRunning(inst.Workload) // probed again from the start
		s.led.Update(e.InstanceID, func(e *ledger.Entry) {
			e.Last = ledger.LastStatus{Status: workload.StatusRunning, IP: st.IP, Ports: st.Ports, Timings: e.Last.Timings, Ready: ready}
		})
		s.log.Info("adopted running instance", "instance", e.InstanceID, "name", e.Name)
		if err == nil {
			s.watchProbes(rt, inst, st.IP, s.epochOf(e.InstanceID))
		}
		return
	}
	if st.Phase != runtime.PhaseExited {
		st.Phase = runtime.PhaseFailed
	}
	s.applyExit(e, st)
}
