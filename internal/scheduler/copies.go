package scheduler

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
)

// tombstone is what the scheduler remembers of an instance it does not
// place on some nodes that may still run a copy of it: the node it was
// lost with, nodes it moved from (a restart, a node back after being
// lost), copies a node was destroying. An instance is TERMINATED only once
// every node that may run a copy has confirmed it stopped it, or is gone
// for good (issue 8).
type tombstone struct {
	nodes map[string]time.Time // node -> since when a copy may run there
	at    time.Time            // last change; forgotten after tombstoneTTL
	// gone: the controller asked for it to be destroyed. Copies are
	// destroyed, a CREATE is ignored. Otherwise the copies were lost or
	// left behind: the controller decides (it reschedules the instance,
	// or destroys it), so a node coming back with one gets it back.
	gone      bool
	confirmed bool // TERMINATED was reported
}

// tomb returns the tombstone of id, created if needed, as changed now.
func (s *state) tomb(id string) *tombstone {
	t := s.tombstones[id]
	if t == nil {
		t = &tombstone{nodes: map[string]time.Time{}}
		s.tombstones[id] = t
	}
	t.at = s.now()
	return t
}

// staleCopy notes that a copy of id may run on node.
func (s *state) staleCopy(id, node string) *tombstone {
	t := s.tomb(id)
	if _, ok := t.nodes[node]; !ok && node != "" {
		t.nodes[node] = s.now()
	}
	return t
}

// dropCopy forgets the copy of id on node: it is the instance now (adopted
// or placed there).
func (s *state) dropCopy(id, node string) {
	t := s.tombstones[id]
	if t == nil {
		return
	}
	delete(t.nodes, node)
	if !t.gone && len(t.nodes) == 0 {
		delete(s.tombstones, id)
	}
}

// destroyCopies marks inst destroyed, notes a copy on also (if set), and
// orders every node that may run a copy to destroy it. An instance no
// longer placed is reported DESTROYING until they confirm.
func (s *state) destroyCopies(inst *instance, also, reason string) *tombstone {
	t := s.staleCopy(inst.id, also)
	t.gone = true
	placed := s.insts[inst.id] == inst && inst.phase == phaseAssigned
	nodes := slices.Sorted(maps.Keys(t.nodes))
	for _, node := range nodes {
		if placed && node == inst.node {
			continue // ordered by the caller
		}
		if n := s.nodes[node]; n != nil {
			s.order(n, inst, commonpb.WorkloadRequestKind_DESTROY)
		}
	}
	if !placed && len(nodes) > 0 {
		at := also
		if at == "" {
			at = nodes[0]
		}
		s.emit(inst, commonpb.ResourceStatus_DESTROYING, at, reason,
			fmt.Sprintf("waiting for %s to confirm it stopped the instance", strings.Join(nodes, ", ")))
	}
	return t
}

// destroyed handles the confirmation by node that it stopped inst, which
// was being destroyed there (m: its TERMINATED; nil when its registration
// no longer lists it). It is TERMINATED, unless a copy may still run on
// another node: then DESTROYING until that node confirms too.
func (s *state) destroyed(inst *instance, node string, m *commonpb.InstanceMetric) {
	t := s.tomb(inst.id)
	t.gone = true
	delete(t.nodes, node)
	if len(t.nodes) > 0 {
		others := slices.Sorted(maps.Keys(t.nodes))
		s.emit(inst, commonpb.ResourceStatus_DESTROYING, others[0], "",
			fmt.Sprintf("stopped on %s; waiting for %s to confirm it stopped its copy", node, strings.Join(others, ", ")))
		return
	}
	t.confirmed = true
	if m == nil {
		s.emit(inst, commonpb.ResourceStatus_TERMINATED, node, api.ReasonDestroyed, "not running on its node any more")
		return
	}
	s.record(inst, m)
}

// copyGone records that node has no copy of id (any more). The last copy
// of a destroyed instance no longer placed ends it (TERMINATED). The
// tombstone of a destroyed instance stays, to destroy it if a node lists
// it again.
func (s *state) copyGone(id, node, msg string) {
	t := s.tombstones[id]
	if t == nil {
		return
	}
	if _, ok := t.nodes[node]; !ok {
		return
	}
	delete(t.nodes, node)
	t.at = s.now()
	if !t.gone {
		if len(t.nodes) == 0 {
			delete(s.tombstones, id)
		}
		return
	}
	if len(t.nodes) == 0 && !t.confirmed && s.insts[id] == nil {
		t.confirmed = true
		s.emit(&instance{id: id}, commonpb.ResourceStatus_TERMINATED, node, api.ReasonDestroyed, msg)
	}
}

// checkCopies makes the explicit "node lost for good" decision for the
// copies of destroyed instances on nodes away for goneAfter, and forgets
// old tombstones.
func (s *state) checkCopies(now time.Time) {
	for id, t := range s.tombstones {
		if t.gone && !t.confirmed {
			var lost []string
			for _, node := range slices.Sorted(maps.Keys(t.nodes)) {
				if s.goneForGood(node, t.nodes[node], now) {
					lost = append(lost, node)
					delete(t.nodes, node)
				}
			}
			if len(lost) > 0 && len(t.nodes) == 0 && s.insts[id] == nil {
				// If such a node ever comes back, the tombstone has it
				// destroy the instance.
				t.confirmed = true
				s.emit(&instance{id: id}, commonpb.ResourceStatus_TERMINATED, lost[0], api.ReasonNodeLost,
					fmt.Sprintf("%s lost for good (not back for %s): the instance is presumed gone with it", strings.Join(lost, ", "), s.goneAfter))
			}
		}
		if now.Sub(t.at) > tombstoneTTL {
			delete(s.tombstones, id)
		}
	}
}

// goneForGood reports whether node, where a copy may run since since, has
// been away for goneAfter.
func (s *state) goneForGood(node string, since, now time.Time) bool {
	if n := s.nodes[node]; n != nil {
		if n.ready {
			return false
		}
		if n.lastSeen.After(since) {
			since = n.lastSeen
		}
	}
	return now.Sub(since) > s.goneAfter
}
