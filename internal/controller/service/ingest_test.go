package service

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/workload"
)

func intp(i int) *int { return &i }

func TestApplyStatus(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	running := workload.Instance{ID: "i", Status: workload.StatusRunning, Node: "n1", IP: "10.0.0.2",
		Ports: []workload.PortMapping{{Port: 80, TargetPort: 80}}}
	pending := workload.Instance{ID: "i", Status: workload.StatusPending}
	readyInst := running
	readyInst.Ready = true
	deleting := running
	deleting.DeleteRequested = true
	deleting.Status = workload.StatusDestroying
	rescheduled := workload.Instance{ID: "i", Status: workload.StatusPending, Reason: api.ReasonNodeLost, Restarts: 1}
	alive := applyContext{WorkloadExists: true, Policy: workload.RestartAlways, Now: now}
	never := applyContext{WorkloadExists: true, Policy: workload.RestartNever, Now: now}
	orphan := applyContext{WorkloadExists: false, Policy: workload.RestartAlways, Now: now}
	m := func(st workload.Status, f func(*Status)) Status {
		x := Status{InstanceID: "i", Status: st, Node: "n1"}
		if f != nil {
			f(&x)
		}
		return x
	}
	tests := []struct {
		name string
		in   workload.Instance
		m    Status
		c    applyContext
		want outcome
		out  workload.Instance
	}{
		{"pending to creating", pending, m(workload.StatusCreating, func(x *Status) { x.Message = "pulling" }), alive, outcomeWrite,
			workload.Instance{ID: "i", Status: workload.StatusCreating, Node: "n1", Message: "pulling", UpdatedAt: now}},
		{"same status again", running, m(workload.StatusRunning, nil), alive, outcomeKeep, running},
		{"readiness stored", running, m(workload.StatusRunning, func(x *Status) { x.Ready = true }), alive, outcomeWrite,
			func() workload.Instance { r := running; r.Ready = true; r.UpdatedAt = now; return r }()},
		{"readiness lost", readyInst, m(workload.StatusRunning, nil), alive, outcomeWrite,
			func() workload.Instance { r := running; r.UpdatedAt = now; return r }()},
		{"never ready unless running", running, m(workload.StatusCreating, func(x *Status) { x.Ready = true }), alive, outcomeWrite,
			workload.Instance{ID: "i", Status: workload.StatusCreating, Node: "n1", Ports: running.Ports, UpdatedAt: now}},
		{"node lost is not ready", readyInst, m(workload.StatusFailed, func(x *Status) { x.Reason = api.ReasonNodeLost }), alive, outcomeReschedule,
			workload.Instance{ID: "i", Status: workload.StatusPending, Reason: api.ReasonNodeLost, Message: "rescheduling: node n1 lost", FormerNodes: []string{"n1"}, Restarts: 1, UpdatedAt: now}},
		{"unknown status ignored", running, m(workload.StatusUnknown, nil), alive, outcomeKeep, running},
		{"exit code kept on failure", running, m(workload.StatusFailed, func(x *Status) { x.ExitCode = intp(1); x.Reason = api.ReasonError }), alive, outcomeWrite,
			workload.Instance{ID: "i", Status: workload.StatusFailed, Node: "n1", IP: "10.0.0.2", Ports: running.Ports, Reason: api.ReasonError, ExitCode: intp(1), UpdatedAt: now}},
		{"restarts never go down", workload.Instance{ID: "i", Status: workload.StatusRunning, Node: "n1", Restarts: 3}, m(workload.StatusRunning, func(x *Status) { x.Restarts = 1 }), alive, outcomeKeep,
			workload.Instance{ID: "i", Status: workload.StatusRunning, Node: "n1", Restarts: 3}},
		{"terminated of deleted removes", deleting, m(workload.StatusTerminated, nil), alive, outcomeRemove, deleting},
		{"terminated of orphan removes", running, m(workload.StatusTerminated, nil), orphan, outcomeRemove, running},
		{"terminated of live is kept, with a reason", running, m(workload.StatusTerminated, nil), alive, outcomeWrite,
			workload.Instance{ID: "i", Status: workload.StatusTerminated, Node: "n1", IP: "10.0.0.2", Ports: running.Ports, Reason: api.ReasonUnknown, UpdatedAt: now}},
		{"running while deleting stays destroying", deleting, m(workload.StatusRunning, nil), alive, outcomeKeep, deleting},
		{"node lost reschedules", running, m(workload.StatusFailed, func(x *Status) { x.Reason = api.ReasonNodeLost }), alive, outcomeReschedule,
			workload.Instance{ID: "i", Status: workload.StatusPending, Reason: api.ReasonNodeLost, Message: "rescheduling: node n1 lost", FormerNodes: []string{"n1"}, Restarts: 1, UpdatedAt: now}},
		{"node lost with Never fails", running, m(workload.StatusFailed, func(x *Status) { x.Reason = api.ReasonNodeLost }), never, outcomeWrite,
			workload.Instance{ID: "i", Status: workload.StatusFailed, Node: "n1", IP: "10.0.0.2", Ports: running.Ports, Reason: api.ReasonNodeLost, UpdatedAt: now}},
		// Issue 8 (2): removed only once its node confirms it stopped it.
		{"node lost of deleted waits for its node", deleting, m(workload.StatusFailed, func(x *Status) { x.Reason = api.ReasonNodeLost }), alive, outcomeWrite,
			func() workload.Instance {
				d := deleting
				d.Reason, d.Message, d.UpdatedAt = api.ReasonNodeLost, "node n1 lost: waiting for it to stop the instance", now
				return d
			}()},
		{"node lost of orphan waits for its node", running, m(workload.StatusFailed, func(x *Status) { x.Reason = api.ReasonNodeLost }), orphan, outcomeWrite,
			func() workload.Instance {
				d := running
				d.Status, d.Reason, d.Message, d.UpdatedAt = workload.StatusDestroying, api.ReasonNodeLost, "node n1 lost: waiting for it to stop the instance", now
				return d
			}()},
		{"lost with Never and back: destroyed", workload.Instance{ID: "i", Status: workload.StatusFailed, Node: "n1", Reason: api.ReasonNodeLost},
			m(workload.StatusRunning, nil), never, outcomeDestroy,
			workload.Instance{ID: "i", Status: workload.StatusFailed, Node: "n1", Reason: api.ReasonNodeLost}},
		{"lost with Never, copy destroyed: still failed", workload.Instance{ID: "i", Status: workload.StatusFailed, Node: "n1", Reason: api.ReasonNodeLost},
			m(workload.StatusTerminated, func(x *Status) { x.Reason = api.ReasonDestroyed }), never, outcomeKeep,
			workload.Instance{ID: "i", Status: workload.StatusFailed, Node: "n1", Reason: api.ReasonNodeLost}},
		{"node lost twice is one reschedule", rescheduled, m(workload.StatusFailed, func(x *Status) { x.Reason = api.ReasonNodeLost }), alive, outcomeKeep, rescheduled},
		{"node lost after a pending status ignored", workload.Instance{ID: "i", Status: workload.StatusPending, Reason: api.ReasonNoNodeFits, Restarts: 1},
			m(workload.StatusFailed, func(x *Status) { x.Reason = api.ReasonNodeLost }), alive, outcomeKeep,
			workload.Instance{ID: "i", Status: workload.StatusPending, Reason: api.ReasonNoNodeFits, Restarts: 1}},
		{"node lost of a scheduled instance reschedules", workload.Instance{ID: "i", Status: workload.StatusPending, Node: "n1", Message: "scheduled on n1"},
			m(workload.StatusFailed, func(x *Status) { x.Reason = api.ReasonNodeLost }), alive, outcomeReschedule,
			workload.Instance{ID: "i", Status: workload.StatusPending, Reason: api.ReasonNodeLost, Message: "rescheduling: node n1 lost", FormerNodes: []string{"n1"}, Restarts: 1, UpdatedAt: now}},
		{"node lost twice with Never is one failure", workload.Instance{ID: "i", Status: workload.StatusFailed, Node: "n1", Reason: api.ReasonNodeLost},
			m(workload.StatusFailed, func(x *Status) { x.Reason = api.ReasonNodeLost }), never, outcomeKeep,
			workload.Instance{ID: "i", Status: workload.StatusFailed, Node: "n1", Reason: api.ReasonNodeLost}},
		// Issue 8: the node it leaves may still run a copy: remembered,
		// for a DESTROY to wait for it too.
		{"moved: former node remembered", running, m(workload.StatusRunning, func(x *Status) { x.Node = "n2" }), alive, outcomeWrite,
			workload.Instance{ID: "i", Status: workload.StatusRunning, Node: "n2", FormerNodes: []string{"n1"}, UpdatedAt: now}},
		{"moved back: not a former node any more", workload.Instance{ID: "i", Status: workload.StatusRunning, Node: "n2", FormerNodes: []string{"n1", "n3"}},
			m(workload.StatusRunning, nil), alive, outcomeWrite,
			workload.Instance{ID: "i", Status: workload.StatusRunning, Node: "n1", FormerNodes: []string{"n3", "n2"}, UpdatedAt: now}},
		// Found by the chaos suite: a restarting pod's address was still
		// shown while the node gave it to another pod.
		{"restarting forgets its address", running, m(workload.StatusCreating, func(x *Status) { x.Reason = api.ReasonBackOff }), alive, outcomeWrite,
			workload.Instance{ID: "i", Status: workload.StatusCreating, Node: "n1", Ports: running.Ports, Reason: api.ReasonBackOff, UpdatedAt: now}},
		{"node lost from an old node ignored", running, m(workload.StatusFailed, func(x *Status) { x.Reason = api.ReasonNodeLost; x.Node = "n0" }), alive, outcomeKeep, running},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := cloneInstance(tt.in)
			got := applyStatus(&in, tt.m, tt.c)
			if got != tt.want {
				t.Errorf("outcome = %d, want %d", got, tt.want)
			}
			if diff := cmp.Diff(tt.out, in); diff != "" {
				t.Errorf("instance (-want +got):\n%s", diff)
			}
		})
	}
}
