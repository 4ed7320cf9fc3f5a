// Package reconcile keeps managed workloads (workloads.apply) as declared:
// replicas instances of the current revision, replacing the lost, removing
// extras, and rolling new revisions out under their update policy, gated
// by readiness. Plan is the pure decision, table-tested; the Reconciler
// runs it on the lease holder over what the store holds (level-triggered:
// every pass recomputes from the store, so a restart mid-rollout goes on).
package reconcile

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/rik-org/rik/api"
)

// FailedRetention is how long a FAILED instance of a managed workload is
// kept (shown, with its reason) before it is removed and replaced: it
// bounds how fast an instance that fails for good is retried.
const FailedRetention = 10 * time.Second

// Policy is what a managed workload asks for.
type Policy struct {
	Replicas       int
	MaxSurge       int
	MaxUnavailable int
	MinReady       time.Duration
	Deadline       time.Duration // progressDeadlineSeconds
}

// Instance is what the planner knows of one instance.
type Instance struct {
	ID, Name string
	Current  bool // runs the current revision
	// Live: not ended and not being deleted.
	Live       bool
	Ready      bool
	ReadySince time.Time
	// Ended: FAILED or TERMINATED (and not being deleted).
	Ended, Failed bool
	Since         time.Time // when its status last changed
	Status        string
	Reason        string
	Message       string
	CreatedAt     time.Time
}

// State is the rollout of the current revision as last recorded.
type State struct {
	Revision   int
	Phase      string // api.Rollout* or "" (never planned)
	Reason     string
	Message    string
	StartedAt  time.Time
	ProgressAt time.Time
	Available  int // available instances of the current revision last seen
}

// Input is everything Plan decides from.
type Input struct {
	Policy    Policy
	Instances []Instance
	State     State
	Now       time.Time
}

// Plan says what to do: create Create instances of the current revision,
// delete the instances Delete names, and record State.
type Plan struct {
	Create int
	Delete []string
	State  State
	// Counts, for the rollout status.
	Live, Ready, UpToDate, Available int
}

// counts sorts the instances of an input.
type counts struct {
	cur, old           []Instance // live
	availCur, availOld int
	ready              int
	ended              []Instance
}

func (in Input) count() counts {
	var c counts
	for _, i := range in.Instances {
		switch {
		case i.Live && i.Current:
			c.cur = append(c.cur, i)
			if in.available(i) {
				c.availCur++
			}
		case i.Live:
			c.old = append(c.old, i)
			if in.available(i) {
				c.availOld++
			}
		case i.Ended:
			c.ended = append(c.ended, i)
		}
		if i.Live && i.Ready {
			c.ready++
		}
	}
	return c
}

// available: ready for at least minReadySeconds.
func (in Input) available(i Instance) bool {
	return i.Ready && !in.Now.Before(i.ReadySince.Add(in.Policy.MinReady))
}

// Decide plans one pass for a managed workload.
func Decide(in Input) Plan {
	c := in.count()
	var p Plan
	p.Delete = in.cleanup(c.ended)
	if in.State.Phase == api.RolloutFailed {
		p.Create = max(0, in.Policy.Replicas-len(c.cur)-len(c.old))
	} else {
		p.Create, p.Delete = in.step(c, p.Delete)
	}
	p.Live, p.Ready, p.UpToDate, p.Available = len(c.cur)+len(c.old), c.ready, len(c.cur), c.availCur
	p.State = in.nextState(c, p)
	return p
}

// cleanup removes ended instances: TERMINATED at once, FAILED after
// FailedRetention. Their replacements follow (they are not live).
func (in Input) cleanup(ended []Instance) []string {
	var out []string
	for _, i := range ended {
		if !i.Failed || !in.Now.Before(i.Since.Add(FailedRetention)) {
			out = append(out, i.ID)
		}
	}
	return out
}

// step is a rolling step: scale the current revision towards replicas
// within replicas+maxSurge live instances, and remove old instances while
// at least replicas-maxUnavailable stay available.
func (in Input) step(c counts, del []string) (int, []string) {
	pol := in.Policy
	if extra := len(c.cur) - pol.Replicas; extra > 0 {
		del = append(del, ids(byDeletionOrder(c.cur, in), extra)...)
	}
	create := max(0, min(pol.Replicas-len(c.cur), pol.Replicas+pol.MaxSurge-len(c.cur)-len(c.old)))
	if len(c.old) == 0 {
		return create, del
	}
	var availOld []Instance
	for _, i := range c.old {
		if in.available(i) {
			availOld = append(availOld, i)
		} else {
			del = append(del, i.ID) // removing it costs no availability
		}
	}
	budget := c.availCur + c.availOld - max(0, pol.Replicas-pol.MaxUnavailable)
	if budget > 0 {
		del = append(del, ids(byDeletionOrder(availOld, in), budget)...)
	}
	return create, del
}

// byDeletionOrder sorts instances in the order they are removed: not
// available first, then the newest.
func byDeletionOrder(insts []Instance, in Input) []Instance {
	out := slices.Clone(insts)
	slices.SortStableFunc(out, func(a, b Instance) int {
		if aa, ba := in.available(a), in.available(b); aa != ba {
			if !aa {
				return -1
			}
			return 1
		}
		return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), cmp.Compare(a.Name, b.Name))
	})
	return out
}

func ids(insts []Instance, n int) []string {
	n = min(n, len(insts))
	out := make([]string, n)
	for i := range n {
		out[i] = insts[i].ID
	}
	return out
}

// nextState is the rollout state after p: Complete once replicas
// instances of the current revision are available and nothing else runs;
// Failed when it made no progress within the deadline (it stays so until
// the next revision); Progressing otherwise.
func (in Input) nextState(c counts, p Plan) State {
	s := in.State
	complete := len(c.old) == 0 && len(c.cur) == in.Policy.Replicas && c.availCur == in.Policy.Replicas &&
		p.Create == 0 && len(p.Delete) == 0
	if !complete && (s.Phase == "" || s.Phase == api.RolloutComplete) {
		s.StartedAt, s.ProgressAt = in.Now, in.Now // it starts again (a lost instance, a scale)
	}
	if c.availCur > s.Available {
		s.ProgressAt = in.Now
	}
	s.Available = c.availCur
	switch {
	case complete:
		s.Phase, s.Reason = api.RolloutComplete, ""
		s.Message = fmt.Sprintf("revision %d: %d of %d available", s.Revision, c.availCur, in.Policy.Replicas)
	case s.Phase == api.RolloutFailed:
	case in.Policy.Deadline > 0 && in.Now.Sub(s.ProgressAt) > in.Policy.Deadline:
		s.Phase, s.Reason = api.RolloutFailed, api.ReasonProgressDeadline
		s.Message = in.stuck(c)
	default:
		s.Phase, s.Reason = api.RolloutProgressing, ""
		s.Message = fmt.Sprintf("revision %d: %d of %d available, %d old", s.Revision, c.availCur, in.Policy.Replicas, len(c.old))
	}
	return s
}

// stuck says why a rollout made no progress: the counts and the first
// instance of the current revision that is not available.
func (in Input) stuck(c counts) string {
	msg := fmt.Sprintf("revision %d: %d of %d available after %s; the old instances keep serving",
		in.State.Revision, c.availCur, in.Policy.Replicas, in.Policy.Deadline)
	var pick *Instance
	for k, i := range in.Instances {
		if !i.Current || in.available(i) {
			continue
		}
		if pick == nil || (pick.Reason == "" && i.Reason != "") {
			pick = &in.Instances[k]
		}
	}
	if pick != nil {
		i := *pick
		why := i.Status
		if i.Reason != "" {
			why += " " + i.Reason
		}
		if i.Message != "" {
			why += ": " + i.Message
		}
		if i.Live && i.Status == "RUNNING" {
			why += " (not ready)"
		}
		return msg + "; " + i.Name + " " + why
	}
	return msg
}
