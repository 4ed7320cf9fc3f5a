package service

import (
	"context"
	"sync"
	"time"

	"github.com/rik-org/rik/internal/workload"
)

// orphanEvery bounds how often DESTROY is sent for one unknown instance.
const orphanEvery = time.Minute

// orphans remembers when DESTROY was last sent for instances nobody owns.
type orphans struct {
	mu   sync.Mutex
	sent map[string]time.Time
}

// due reports whether DESTROY for id may be sent at now, and records it.
func (o *orphans) due(id string, now time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.sent == nil {
		o.sent = map[string]time.Time{}
	}
	for k, at := range o.sent {
		if now.Sub(at) >= orphanEvery {
			delete(o.sent, k)
		}
	}
	if _, recent := o.sent[id]; recent {
		return false
	}
	o.sent[id] = now
	return true
}

// orphanAlive reports whether a status of an instance the store does not
// know means something runs or is about to, that nobody owns.
func orphanAlive(st workload.Status) bool {
	switch st {
	case workload.StatusPending, workload.StatusCreating, workload.StatusRunning:
		return true
	}
	return false // Unknown: ignored; FAILED, TERMINATED: over; DESTROYING: on its way
}

// destroyOrphan sends DESTROY for an instance the store does not know
// (deleted while its node was away, adopted by the scheduler after the store
// was reset, ...), at most once per orphanEvery per instance.
func (s *Service) destroyOrphan(ctx context.Context, st Status) {
	id := st.InstanceID
	if !orphanAlive(st.Status) || !s.orphans.due(id, s.now()) {
		s.log.Debug("status for unknown instance ignored", "instance_id", id, "status", string(st.Status))
		return
	}
	s.log.Info("destroying instance unknown to the store", "instance_id", id, "status", string(st.Status), "node", st.Node)
	err := s.sched.Schedule(ctx, Order{Action: Destroy, InstanceID: id, WorkloadID: st.WorkloadID, Node: st.Node})
	if err != nil {
		s.log.Warn("destroying instance unknown to the store", "instance_id", id, "err", err)
	}
}
