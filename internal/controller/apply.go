package controller

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/internal/workload"
)

// api.ReasonNodeLost is the reason the scheduler gives when a node stopped
// sending heartbeats.

// api.ReasonUnknown is set on an instance that ended without a reason given.

// api.ReasonDeleted is the reason of the TERMINATED event of a deleted instance.

// MessageSchedulerDown is set on instances the scheduler did not take yet.
const MessageSchedulerDown = "scheduler unreachable, will retry"

// outcome says what to do after applying a status update.
type outcome int

const (
	outcomeKeep       outcome = iota // nothing changed
	outcomeWrite                     // store the new record
	outcomeRemove                    // delete the record
	outcomeReschedule                // store it, then send CREATE again without node
	outcomeDestroy                   // keep the record; DESTROY the copy the node reports alive
)

// applyContext is what applyMetric needs to know besides the record.
type applyContext struct {
	WorkloadExists bool
	Policy         workload.RestartPolicy
	Now            time.Time
}

// applyMetric is the pure core of status ingestion: it returns the outcome
// and modifies inst accordingly.
func applyMetric(inst *workload.Instance, m *commonpb.InstanceMetric, c applyContext) outcome {
	status := statusFromProto(m.GetStatus())
	if status == workload.StatusUnknown {
		return outcomeKeep
	}
	if status == workload.StatusTerminated && (inst.DeleteRequested || !c.WorkloadExists) {
		return outcomeRemove
	}
	if status == workload.StatusFailed && m.GetReason() == api.ReasonNodeLost {
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
	if m.GetNode() != "" && m.GetNode() != inst.Node {
		// Its address and ports were the old node's.
		moveTo(inst, m.GetNode())
		inst.IP, inst.Ports = "", nil
	}
	if m.GetIp() != "" {
		inst.IP = m.GetIp()
	} else if status == workload.StatusPending || status == workload.StatusCreating {
		inst.IP = "" // (re)starting: its old address may go to another instance
	}
	if len(m.GetPorts()) > 0 {
		inst.Ports = portsFromProto(m.GetPorts())
	}
	inst.Reason = m.GetReason()
	if inst.Reason == "" && status.Terminal() {
		inst.Reason = api.ReasonUnknown // a node that says nothing (RIK's riklet)
	}
	inst.Message = m.GetMessage()
	switch {
	case m.GetHasExitCode():
		code := int(m.GetExitCode())
		inst.ExitCode = &code
	case !status.Terminal():
		inst.ExitCode = nil
	}
	if int(m.GetRestarts()) > inst.Restarts {
		inst.Restarts = int(m.GetRestarts())
	}
	if len(m.GetTimingsMs()) > 0 {
		if inst.Timings == nil {
			inst.Timings = map[string]int64{}
		}
		maps.Copy(inst.Timings, m.GetTimingsMs())
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
func applyNodeLost(inst *workload.Instance, m *commonpb.InstanceMetric, c applyContext) outcome {
	if inst.DeleteRequested || !c.WorkloadExists {
		// It may still run on the lost node: listed DESTROYING until the
		// node confirms it stopped it (DESTROY is re-sent by the resync).
		msg := fmt.Sprintf("node %s lost: waiting for it to stop the instance", m.GetNode())
		if inst.Status == workload.StatusDestroying && inst.Reason == api.ReasonNodeLost && inst.Message == msg {
			return outcomeKeep
		}
		inst.Status = workload.StatusDestroying
		inst.Reason = api.ReasonNodeLost
		inst.Message = msg
		inst.UpdatedAt = c.Now
		return outcomeWrite
	}
	// Only the node the instance is on can lose it. An instance with no node
	// is not placed (or already rescheduled: a duplicate delivery to several
	// controllers); one on another node has moved.
	if inst.Node == "" || (m.GetNode() != "" && inst.Node != m.GetNode()) {
		return outcomeKeep
	}
	if c.Policy == workload.RestartNever {
		if inst.Status == workload.StatusFailed && inst.Reason == api.ReasonNodeLost {
			return outcomeKeep
		}
		inst.Status = workload.StatusFailed
		inst.Reason = api.ReasonNodeLost
		inst.Message = m.GetMessage()
		inst.UpdatedAt = c.Now
		return outcomeWrite
	}
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

func statusFromProto(s commonpb.ResourceStatus) workload.Status {
	switch s {
	case commonpb.ResourceStatus_PENDING:
		return workload.StatusPending
	case commonpb.ResourceStatus_RUNNING:
		return workload.StatusRunning
	case commonpb.ResourceStatus_FAILED:
		return workload.StatusFailed
	case commonpb.ResourceStatus_TERMINATED:
		return workload.StatusTerminated
	case commonpb.ResourceStatus_CREATING:
		return workload.StatusCreating
	case commonpb.ResourceStatus_DESTROYING:
		return workload.StatusDestroying
	}
	return workload.StatusUnknown
}

func portsFromProto(ps []*commonpb.PortMapping) []workload.PortMapping {
	out := make([]workload.PortMapping, 0, len(ps))
	for _, p := range ps {
		out = append(out, workload.PortMapping{Port: int(p.GetPort()), TargetPort: int(p.GetTargetPort()), Protocol: p.GetProtocol()})
	}
	return out
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
		a.DeleteRequested == b.DeleteRequested
}
