package reconcile

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// inst builds instances for the tables: spec is "cur|old" + status:
// "ready", "unready", "pending", "failed", "terminated", "deleting".
func inst(id, spec string, created int) Instance {
	rev, status, _ := strings.Cut(spec, ":")
	i := Instance{ID: id, Name: id, Current: rev == "cur", CreatedAt: t0.Add(time.Duration(created) * time.Second), Since: t0}
	switch status {
	case "ready":
		i.Live, i.Ready, i.ReadySince, i.Status = true, true, t0, "RUNNING"
	case "fresh": // ready just now
		i.Live, i.Ready, i.ReadySince, i.Status = true, true, t0.Add(time.Hour), "RUNNING"
	case "unready":
		i.Live, i.Status = true, "RUNNING"
	case "pending":
		i.Live, i.Status = true, "PENDING"
	case "failed":
		i.Ended, i.Failed, i.Status, i.Reason, i.Message = true, true, "FAILED", "ImagePullFailed", "no such image"
	case "failednow":
		i.Ended, i.Failed, i.Status, i.Reason, i.Since = true, true, "FAILED", "StartFailed", t0.Add(time.Hour)
	case "terminated":
		i.Ended, i.Status = true, "TERMINATED"
	case "deleting":
		i.Status = "DESTROYING"
	default:
		panic(spec)
	}
	return i
}

func insts(specs ...string) []Instance {
	out := make([]Instance, len(specs))
	for k, s := range specs {
		out[k] = inst(fmt.Sprintf("i%d", k), s, k)
	}
	return out
}

func TestDecide(t *testing.T) {
	now := t0.Add(time.Hour)
	pol := func(replicas, surge, unavail int) Policy {
		return Policy{Replicas: replicas, MaxSurge: surge, MaxUnavailable: unavail, Deadline: 10 * time.Minute}
	}
	progressing := State{Revision: 2, Phase: api.RolloutProgressing, StartedAt: now, ProgressAt: now}
	tests := []struct {
		name       string
		in         Input
		wantCreate int
		wantDelete []string
		wantPhase  string
	}{
		{"fresh workload creates replicas", Input{Policy: pol(3, 1, 0)}, 3, nil, api.RolloutProgressing},
		{"zero replicas is complete", Input{Policy: pol(0, 1, 0)}, 0, nil, api.RolloutComplete},
		{"steady state does nothing", Input{Policy: pol(2, 1, 0), Instances: insts("cur:ready", "cur:ready")}, 0, nil, api.RolloutComplete},
		{"instance deleted by hand is replaced", Input{Policy: pol(3, 1, 0), Instances: insts("cur:ready", "cur:ready", "cur:deleting")}, 1, nil, api.RolloutProgressing},
		{"terminated is removed and replaced", Input{Policy: pol(2, 1, 0), Instances: insts("cur:ready", "cur:terminated")}, 1, []string{"i1"}, api.RolloutProgressing},
		{"failed long ago is removed and replaced", Input{Policy: pol(2, 1, 0), Instances: insts("cur:ready", "cur:failed")}, 1, []string{"i1"}, api.RolloutProgressing},
		{"failed just now is kept a while, its replacement created", Input{Policy: pol(2, 1, 0), Instances: insts("cur:ready", "cur:failednow")}, 1, nil, api.RolloutProgressing},
		{"pending ones count: no double create", Input{Policy: pol(3, 1, 0), Instances: insts("cur:ready", "cur:pending", "cur:pending")}, 0, nil, api.RolloutProgressing},
		{"scale down removes unready first, then newest", Input{Policy: pol(1, 1, 0), Instances: insts("cur:ready", "cur:ready", "cur:unready")}, 0, []string{"i2", "i1"}, api.RolloutProgressing},
		{"scale to zero", Input{Policy: pol(0, 1, 0), Instances: insts("cur:ready", "cur:ready")}, 0, []string{"i1", "i0"}, api.RolloutProgressing},
		// Rolling updates.
		{"rollout starts with one surge", Input{Policy: pol(3, 1, 0), State: progressing, Instances: insts("old:ready", "old:ready", "old:ready")}, 1, nil, api.RolloutProgressing},
		{"surge in flight: wait", Input{Policy: pol(3, 1, 0), State: progressing, Instances: insts("old:ready", "old:ready", "old:ready", "cur:unready")}, 0, nil, api.RolloutProgressing},
		{"new one ready: remove one old (oldest last: newest old first)", Input{Policy: pol(3, 1, 0), State: progressing, Instances: insts("old:ready", "old:ready", "old:ready", "cur:ready")}, 0, []string{"i2"}, api.RolloutProgressing},
		{"after removal: next surge", Input{Policy: pol(3, 1, 0), State: progressing, Instances: insts("old:ready", "old:ready", "old:deleting", "cur:ready")}, 1, nil, api.RolloutProgressing},
		{"old unready removed at no cost", Input{Policy: pol(3, 1, 0), State: progressing, Instances: insts("old:ready", "old:ready", "old:unready", "cur:unready")}, 0, []string{"i2"}, api.RolloutProgressing},
		{"maxUnavailable 1, surge 0: remove first", Input{Policy: pol(3, 0, 1), State: progressing, Instances: insts("old:ready", "old:ready", "old:ready")}, 0, []string{"i2"}, api.RolloutProgressing},
		{"maxUnavailable 1, surge 0: then replace", Input{Policy: pol(3, 0, 1), State: progressing, Instances: insts("old:ready", "old:ready", "cur:pending")}, 0, nil, api.RolloutProgressing},
		{"maxUnavailable 1, surge 0: one gap only", Input{Policy: pol(3, 0, 1), State: progressing, Instances: insts("old:ready", "old:ready", "old:deleting")}, 1, nil, api.RolloutProgressing},
		{"surge 2 unavailable 1", Input{Policy: pol(4, 2, 1), State: progressing, Instances: insts("old:ready", "old:ready", "old:ready", "old:ready")}, 2, []string{"i3"}, api.RolloutProgressing},
		{"last old goes once all new available", Input{Policy: pol(2, 1, 0), State: progressing, Instances: insts("old:ready", "cur:ready", "cur:ready")}, 0, []string{"i0"}, api.RolloutProgressing},
		{"rollout done", Input{Policy: pol(2, 1, 0), State: progressing, Instances: insts("cur:ready", "cur:ready", "old:deleting")}, 0, nil, api.RolloutComplete},
		{"minReadySeconds: ready but not yet available keeps old", Input{Policy: Policy{Replicas: 1, MaxSurge: 1, MinReady: time.Minute, Deadline: time.Hour}, State: progressing,
			Instances: insts("old:ready", "cur:fresh")}, 0, nil, api.RolloutProgressing},
		{"scale up during rollout stays within surge", Input{Policy: pol(5, 1, 0), State: progressing, Instances: insts("old:ready", "old:ready", "old:ready", "cur:unready")}, 2, nil, api.RolloutProgressing},
		// Progress deadline.
		{"stuck past the deadline fails, old stay", Input{Policy: pol(3, 1, 0), State: State{Revision: 2, Phase: api.RolloutProgressing, StartedAt: t0, ProgressAt: t0},
			Instances: insts("old:ready", "old:ready", "old:ready", "cur:unready")}, 0, nil, api.RolloutFailed},
		{"failed rollout does not go on", Input{Policy: pol(3, 1, 0), State: State{Revision: 2, Phase: api.RolloutFailed},
			Instances: insts("old:ready", "old:ready", "old:ready", "cur:failednow")}, 0, nil, api.RolloutFailed},
		{"failed rollout still keeps replicas live", Input{Policy: pol(3, 1, 0), State: State{Revision: 2, Phase: api.RolloutFailed},
			Instances: insts("old:ready", "old:ready", "old:deleting")}, 1, nil, api.RolloutFailed},
		{"failed rollout completes if it gets there", Input{Policy: pol(1, 1, 0), State: State{Revision: 2, Phase: api.RolloutFailed},
			Instances: insts("cur:ready")}, 0, nil, api.RolloutComplete},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.Now = now
			p := Decide(tt.in)
			if p.Create != tt.wantCreate || !slices.Equal(p.Delete, tt.wantDelete) || p.State.Phase != tt.wantPhase {
				t.Fatalf("Decide = create %d delete %v phase %s (%s), want create %d delete %v phase %s",
					p.Create, p.Delete, p.State.Phase, p.State.Message, tt.wantCreate, tt.wantDelete, tt.wantPhase)
			}
		})
	}
}

// TestRollingNeverBelowMinAvailable simulates whole rollouts pass by pass
// (created instances become ready on the next pass, deleted ones vanish)
// and checks the availability floor and the surge ceiling at every step.
func TestRollingNeverBelowMinAvailable(t *testing.T) {
	for _, c := range []struct{ replicas, surge, unavail int }{{3, 1, 0}, {3, 0, 1}, {5, 2, 1}, {4, 1, 2}, {1, 1, 0}, {10, 3, 0}} {
		t.Run(fmt.Sprintf("r%d-s%d-u%d", c.replicas, c.surge, c.unavail), func(t *testing.T) {
			var cur []Instance
			for k := range c.replicas {
				cur = append(cur, inst(fmt.Sprintf("old%d", k), "old:ready", k))
			}
			state := State{Revision: 2, Phase: api.RolloutProgressing, StartedAt: t0, ProgressAt: t0}
			next := 0
			for pass := 0; ; pass++ {
				if pass > 100 {
					t.Fatal("rollout did not complete in 100 passes")
				}
				in := Input{Policy: Policy{Replicas: c.replicas, MaxSurge: c.surge, MaxUnavailable: c.unavail, Deadline: time.Hour},
					Instances: cur, State: state, Now: t0.Add(time.Minute)}
				p := Decide(in)
				state = p.State
				if p.State.Phase == api.RolloutComplete {
					for _, i := range cur {
						if !i.Current {
							t.Fatalf("complete with an old instance %s", i.ID)
						}
					}
					return
				}
				// Apply: deletions vanish, pending ones turn ready, creations appear pending.
				var after []Instance
				for _, i := range cur {
					if slices.Contains(p.Delete, i.ID) {
						continue
					}
					if i.Status == "PENDING" {
						i = inst(i.ID, "cur:ready", 0)
					}
					after = append(after, i)
				}
				avail := 0
				for _, i := range after {
					if i.Ready {
						avail++
					}
				}
				if avail < c.replicas-c.unavail {
					t.Fatalf("pass %d: %d available, floor %d", pass, avail, c.replicas-c.unavail)
				}
				for range p.Create {
					after = append(after, inst(fmt.Sprintf("new%d", next), "cur:pending", 100+next))
					next++
				}
				if len(after) > c.replicas+c.surge {
					t.Fatalf("pass %d: %d live, ceiling %d", pass, len(after), c.replicas+c.surge)
				}
				cur = after
			}
		})
	}
}

func TestStuckMessageSaysWhy(t *testing.T) {
	in := Input{Policy: Policy{Replicas: 1, MaxSurge: 1, Deadline: time.Minute}, Now: t0.Add(time.Hour),
		State:     State{Revision: 4, Phase: api.RolloutProgressing, StartedAt: t0, ProgressAt: t0},
		Instances: insts("old:ready", "cur:pending", "cur:failednow")}
	p := Decide(in)
	if p.State.Phase != api.RolloutFailed || p.State.Reason != api.ReasonProgressDeadline {
		t.Fatalf("state %+v", p.State)
	}
	for _, want := range []string{"revision 4: 0 of 1 available", "old instances keep serving", "i2 FAILED"} {
		if !strings.Contains(p.State.Message, want) {
			t.Errorf("message %q lacks %q", p.State.Message, want)
		}
	}
}

func TestCompleteStateIsStable(t *testing.T) {
	in := Input{Policy: Policy{Replicas: 2, MaxSurge: 1}, Now: t0.Add(time.Hour), Instances: insts("cur:ready", "cur:ready")}
	first := Decide(in)
	in.State = first.State
	in.Now = in.Now.Add(time.Minute)
	if second := Decide(in); second.State != first.State {
		t.Fatalf("state changed with nothing happening: %+v then %+v", first.State, second.State)
	}
}
