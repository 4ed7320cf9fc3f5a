package service

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/errdefs"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/workload"
)

// Ingest applies one instance status from the scheduler to the store, if
// this controller holds the lease: the status and what comes with it
// (node, address, ports, reason, exit code, restarts, timings) are stored;
// a deleted instance is removed once its node confirms it TERMINATED; one
// lost with its node is rescheduled (or failed, restart policy Never); a
// status of an instance the store does not know destroys it. It reports
// whether the status was dealt with: false when it was left to the lease
// holder or could not be stored (the stream position stops there).
func (s *Service) Ingest(ctx context.Context, st Status) bool {
	log := s.log.With("instance_id", st.InstanceID, "status", string(st.Status))
	if !s.leader.Held() {
		log.Debug("status left to the controller holding the lease")
		return false
	}
	rec, _, err := s.repo.findInstanceByID(ctx, st.InstanceID)
	if errors.Is(err, errdefs.ErrNotFound) {
		s.destroyOrphan(ctx, st)
		return true
	}
	if err != nil {
		log.Error("reading instance for status", "err", err)
		return false
	}
	wl, exists, err := s.workloadOf(ctx, rec.Value)
	if err != nil {
		log.Error("reading workload for status", "err", err)
		return false
	}
	ac := applyContext{WorkloadExists: exists, Policy: wl.Value.RestartPolicy, Now: s.now()}
	var out outcome
	var before workload.Instance
	final, _, err := s.repo.updateInstance(ctx, rec.ID, func(i *workload.Instance) (store.Change, error) {
		before = cloneInstance(*i)
		out = applyStatus(i, st, ac)
		switch out {
		case outcomeKeep, outcomeDestroy:
			return store.Keep, nil
		case outcomeRemove:
			return store.Remove, nil
		}
		return store.Write, nil
	})
	if errors.Is(err, errdefs.ErrNotFound) {
		return true
	}
	if err != nil {
		log.Error("storing instance status", "err", err)
		return false
	}
	switch out {
	case outcomeKeep, outcomeDestroy:
	case outcomeRemove:
		s.forgetEvents(api.EventKindInstance, final.Name)
	default:
		log.Debug("instance status stored", "outcome", int(out))
		s.recordInstance(ctx, final.Name, before, final.Value)
	}
	s.followUp(ctx, out, wl, exists, final.Value, st.Node)
	return true
}

// followUp sends the order an outcome calls for: DESTROY for the copy of a
// lost instance its node still runs, CREATE for a rescheduled one.
func (s *Service) followUp(ctx context.Context, out outcome, wl WorkloadRecord, exists bool, inst workload.Instance, node string) {
	if !exists {
		wl = destroyStub(inst)
	}
	switch out {
	case outcomeDestroy:
		s.log.Info("destroying the copy of a lost instance its node still runs", "instance", inst.Name, "node", node)
		if err := s.sched.Schedule(ctx, order(Destroy, wl, inst, node)); err != nil {
			s.log.Warn("destroying the copy of a lost instance", "instance", inst.Name, "err", err) // the node reports it again
		}
	case outcomeReschedule:
		s.log.Info("rescheduling instance after node loss", "instance", inst.Name, "restarts", inst.Restarts)
		_, _ = s.sendCreate(ctx, wl, inst, "") // failure is recorded on the instance
	}
}

// outcome says what to do after applying a status update.
type outcome int

const (
	outcomeKeep       outcome = iota // nothing changed
	outcomeWrite                     // store the new record
	outcomeRemove                    // delete the record
	outcomeReschedule                // store it, then send CREATE again without node
	outcomeDestroy                   // keep the record; DESTROY the copy the node reports alive
)

// applyContext is what applyStatus needs to know besides the record.
type applyContext struct {
	WorkloadExists bool
	Policy         workload.RestartPolicy
	Now            time.Time
}

// applyStatus is the pure core of status ingestion: it returns the outcome
// and modifies inst accordingly.
func applyStatus(inst *workload.Instance, m Status, c applyContext) outcome {
	status := m.Status
	if status == workload.StatusUnknown || status == "" {
		return outcomeKeep
	}
	if status == workload.StatusTerminated && (inst.DeleteRequested || !c.WorkloadExists) {
		return outcomeRemove
	}
	if status == workload.StatusFailed && m.Reason == api.ReasonNodeLost {
		return applyNodeLost(inst, m, c)
	}
	if inst.Status == workload.StatusFailed && inst.Reason == api.ReasonNodeLost && !inst.DeleteRequested {
		// Declared lost and not rescheduled (restartPolicy Never): its node
		// came back with it. The failure stands; the copy is destroyed.
		if status == workload.StatusRunning || status == workload.StatusCreating {
			return outcomeDestroy
		}
		return outcomeKeep
	}
	before := cloneInstance(*inst)
	if inst.DeleteRequested {
		// Until TERMINATED arrives the user sees the instance going away;
		// a FAILED destroy is shown (the periodic resync sends DESTROY again).
		if status == workload.StatusFailed {
			inst.Status = status
		} else {
			inst.Status = workload.StatusDestroying
		}
	} else {
		inst.Status = status
	}
	if m.Node != "" && m.Node != inst.Node {
		// Its address and ports were the old node's.
		moveTo(inst, m.Node)
		inst.IP, inst.Ports = "", nil
	}
	if m.IP != "" {
		inst.IP = m.IP
	} else if status == workload.StatusPending || status == workload.StatusCreating {
		inst.IP = "" // (re)starting: its old address may go to another instance
	}
	if len(m.Ports) > 0 {
		inst.Ports = slices.Clone(m.Ports)
	}
	inst.Reason = m.Reason
	if inst.Reason == "" && status.Terminal() {
		inst.Reason = api.ReasonUnknown // a node that says nothing (RIK's riklet)
	}
	inst.Message = m.Message
	inst.Ready = m.Ready && status == workload.StatusRunning && !inst.DeleteRequested
	switch {
	case m.ExitCode != nil:
		code := *m.ExitCode
		inst.ExitCode = &code
	case !status.Terminal():
		inst.ExitCode = nil
	}
	if m.Restarts > inst.Restarts {
		inst.Restarts = m.Restarts
	}
	if len(m.Timings) > 0 {
		if inst.Timings == nil {
			inst.Timings = map[string]int64{}
		}
		maps.Copy(inst.Timings, m.Timings)
	}
	if sameInstance(before, *inst) {
		return outcomeKeep
	}
	inst.UpdatedAt = c.Now
	return outcomeWrite
}

// applyNodeLost handles FAILED "node lost": the instance is gone with its
// node. Deleted instances disappear; others are rescheduled unless their
// policy is Never.
func applyNodeLost(inst *workload.Instance, m Status, c applyContext) outcome {
	if inst.DeleteRequested || !c.WorkloadExists {
		// It may still run on the lost node: listed DESTROYING until the
		// node confirms it stopped it (DESTROY is re-sent by the resync).
		msg := fmt.Sprintf("node %s lost: waiting for it to stop the instance", m.Node)
		if inst.Status == workload.StatusDestroying && inst.Reason == api.ReasonNodeLost && inst.Message == msg {
			return outcomeKeep
		}
		inst.Ready = false
		inst.Status = workload.StatusDestroying
		inst.Reason = api.ReasonNodeLost
		inst.Message = msg
		inst.UpdatedAt = c.Now
		return outcomeWrite
	}
	// Only the node the instance is on can lose it. An instance with no node
	// is not placed (or already rescheduled: a duplicate delivery to several
	// controllers); one on another node has moved.
	if inst.Node == "" || (m.Node != "" && inst.Node != m.Node) {
		return outcomeKeep
	}
	if c.Policy == workload.RestartNever {
		if inst.Status == workload.StatusFailed && inst.Reason == api.ReasonNodeLost {
			return outcomeKeep
		}
		inst.Ready = false
		inst.Status = workload.StatusFailed
		inst.Reason = api.ReasonNodeLost
		inst.Message = m.Message
		inst.UpdatedAt = c.Now
		return outcomeWrite
	}
	inst.Ready = false
	inst.Status = workload.StatusPending
	inst.Reason = api.ReasonNodeLost
	inst.Message = fmt.Sprintf("rescheduling: node %s lost", inst.Node)
	moveTo(inst, "")
	inst.IP = ""
	inst.Ports = nil
	inst.ExitCode = nil
	inst.Restarts++
	inst.UpdatedAt = c.Now
	return outcomeReschedule
}

// maxFormerNodes bounds the nodes remembered as possibly running a copy.
const maxFormerNodes = 8

// moveTo sets the node of inst, remembering the one it leaves among its
// former nodes: a copy may still run there (issue 8).
func moveTo(inst *workload.Instance, node string) {
	if inst.Node == node {
		return
	}
	former := slices.DeleteFunc(slices.Clone(inst.FormerNodes), func(n string) bool { return n == node || n == inst.Node })
	if inst.Node != "" {
		former = append(former, inst.Node)
	}
	if len(former) > maxFormerNodes {
		former = former[len(former)-maxFormerNodes:]
	}
	if len(former) == 0 {
		former = nil
	}
	inst.FormerNodes, inst.Node = former, node
}

func cloneInstance(i workload.Instance) workload.Instance {
	i.Ports = slices.Clone(i.Ports)
	i.FormerNodes = slices.Clone(i.FormerNodes)
	i.Timings = maps.Clone(i.Timings)
	if i.ExitCode != nil {
		c := *i.ExitCode
		i.ExitCode = &c
	}
	return i
}

func sameInstance(a, b workload.Instance) bool {
	sameExit := (a.ExitCode == nil) == (b.ExitCode == nil) && (a.ExitCode == nil || *a.ExitCode == *b.ExitCode)
	return a.Status == b.Status && a.Node == b.Node && slices.Equal(a.FormerNodes, b.FormerNodes) && a.IP == b.IP &&
		slices.Equal(a.Ports, b.Ports) && a.Reason == b.Reason && a.Message == b.Message &&
		sameExit && a.Restarts == b.Restarts && maps.Equal(a.Timings, b.Timings) &&
		a.DeleteRequested == b.DeleteRequested && a.Ready == b.Ready
}
