package reconcile

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
)

// fakeCluster holds managed workloads in memory: Create adds pending
// instances of the current revision, Delete removes instances, Record
// stores the state.
type fakeCluster struct {
	wls      []Workload
	listed   int
	next     int
	failWith error // returned by Create
}

func (c *fakeCluster) Managed(context.Context) ([]Workload, error) {
	c.listed++
	return c.wls, nil
}

func (c *fakeCluster) find(w Workload) *Workload {
	for i := range c.wls {
		if c.wls[i].ID == w.ID {
			return &c.wls[i]
		}
	}
	return nil
}

func (c *fakeCluster) Create(_ context.Context, w Workload, n int) error {
	if c.failWith != nil {
		return c.failWith
	}
	cw := c.find(w)
	for range n {
		c.next++
		cw.Instances = append(cw.Instances, Instance{ID: string(rune('a' + c.next)), Current: true, Live: true, Status: "PENDING"})
	}
	return nil
}

func (c *fakeCluster) Delete(_ context.Context, w Workload, ids []string) error {
	cw := c.find(w)
	var keep []Instance
	for _, i := range cw.Instances {
		drop := false
		for _, id := range ids {
			drop = drop || id == i.ID
		}
		if !drop {
			keep = append(keep, i)
		}
	}
	cw.Instances = keep
	return nil
}

func (c *fakeCluster) Record(_ context.Context, w Workload, s State) error {
	c.find(w).State = s
	return nil
}

type leader struct{ atomic.Bool }

func (l *leader) Held() bool { return l.Load() }

type notes struct{ phases []string }

func (n *notes) Rollout(_ context.Context, _ string, s State) { n.phases = append(n.phases, s.Phase) }

func TestStepNeedsLease(t *testing.T) {
	c := &fakeCluster{wls: []Workload{{ID: "w", Name: "web", Revision: 1, Policy: Policy{Replicas: 2, MaxSurge: 1}}}}
	l := &leader{}
	r := New(Config{Cluster: c, Leader: l})
	r.step(context.Background())
	if c.listed != 0 || len(c.wls[0].Instances) != 0 {
		t.Fatalf("without the lease: listed %d times, %d instances", c.listed, len(c.wls[0].Instances))
	}
	l.Store(true)
	r.step(context.Background())
	if len(c.wls[0].Instances) != 2 {
		t.Fatalf("with the lease: %d instances, want 2", len(c.wls[0].Instances))
	}
}

func TestPassRecordsAndNotifies(t *testing.T) {
	now := t0
	c := &fakeCluster{wls: []Workload{{ID: "w", Name: "web", Revision: 1, Policy: Policy{Replicas: 1, MaxSurge: 1}}}}
	n := &notes{}
	l := &leader{}
	l.Store(true)
	r := New(Config{Cluster: c, Leader: l, Notifier: n, Now: func() time.Time { return now }})
	if err := r.Pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.wls[0].Instances[0].Ready, c.wls[0].Instances[0].ReadySince = true, now
	if err := r.Pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c.wls[0].State.Phase != api.RolloutComplete {
		t.Fatalf("state %+v", c.wls[0].State)
	}
	if len(n.phases) != 2 || n.phases[0] != api.RolloutProgressing || n.phases[1] != api.RolloutComplete {
		t.Fatalf("notified %v", n.phases)
	}
	c.failWith = errors.New("quota exceeded")
	c.wls[0].Instances = nil
	if err := r.Pass(context.Background()); err == nil {
		t.Fatal("a failing create was not reported")
	}
}
