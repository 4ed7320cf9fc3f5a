package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/errdefs"
	"github.com/rik-org/rik/internal/store"
)

// Nodes in the store: the controller holding the lease copies the
// scheduler's node list to /node/{name}, so nodes.list can still answer
// (with stale records) while the scheduler is unreachable.

// Nodes lists the nodes the scheduler knows. While it is unreachable the
// stored ones are returned, with status api.NodeStatusUnknown and stale;
// ErrUnavailable when none are stored.
func (s *Service) Nodes(ctx context.Context) ([]NodeRecord, error) {
	nodes, err := s.sched.Nodes(ctx)
	if err == nil {
		items := make([]NodeRecord, 0, len(nodes))
		for _, n := range nodes {
			items = append(items, NodeRecord{ID: n.Name, Name: n.Name, Value: n})
		}
		return items, nil
	}
	if !errors.Is(err, errdefs.ErrUnavailable) {
		return nil, err
	}
	items, serr := s.storedNodes(ctx)
	if serr != nil {
		s.log.Warn("reading stored nodes", "err", serr)
	}
	if len(items) == 0 {
		return nil, errdefs.Errorf(errdefs.ErrUnavailable, "scheduler unreachable")
	}
	return items, nil
}

// validNodeName reports whether name can be a key segment.
func validNodeName(name string) bool {
	return name != "" && len(name) <= 253 && !strings.ContainsAny(name, "/\x00") && strings.TrimSpace(name) == name
}

// stableNode is v without what changes on every heartbeat (time, usage,
// load), with empty kinds and labels made alike.
func stableNode(v api.Node) api.Node {
	v.Usage, v.Load1, v.LastHeartbeat, v.Stale = api.Resources{}, 0, "", false
	if len(v.Kinds) == 0 {
		v.Kinds = nil
	}
	if len(v.Labels) == 0 {
		v.Labels = nil
	}
	return v
}

// nodeNeedsWrite reports whether cur must be stored over stored (nil: none
// is): when anything but the heartbeat time, usage and load changed, or when
// cur's heartbeat is refresh or more after the stored one.
func nodeNeedsWrite(stored *api.Node, cur api.Node, refresh time.Duration) bool {
	if stored == nil {
		return true
	}
	a, b := stableNode(*stored), stableNode(cur)
	if a.Name != b.Name || a.Status != b.Status || a.Capacity != b.Capacity || a.Allocated != b.Allocated ||
		a.Address != b.Address || a.Instances != b.Instances || a.PodSubnet != b.PodSubnet ||
		!slices.Equal(a.Kinds, b.Kinds) || !maps.Equal(a.Labels, b.Labels) {
		return true
	}
	if stored.LastHeartbeat == cur.LastHeartbeat {
		return false
	}
	before, err1 := time.Parse(time.RFC3339, stored.LastHeartbeat)
	after, err2 := time.Parse(time.RFC3339, cur.LastHeartbeat)
	if err1 != nil || err2 != nil {
		return true // a first heartbeat, or one lost: worth storing
	}
	return after.Sub(before) >= refresh || after.Before(before)
}

// nodesLoop syncs the nodes every nodesEvery, and when kicked (after each
// subscribe), while this controller holds the lease.
func (s *Service) nodesLoop(ctx context.Context) {
	tick := time.Tick(s.cfg.NodesEvery)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		case <-s.nodesKick:
		}
		s.nodesTick(ctx)
	}
}

// kickNodes asks nodesLoop to sync at once.
func (s *Service) kickNodes() {
	select {
	case s.nodesKick <- struct{}{}:
	default:
	}
}

// nodesTick syncs the nodes if this controller holds the lease.
func (s *Service) nodesTick(ctx context.Context) {
	if !s.leader.Held() {
		return
	}
	_, err := s.syncNodes(ctx)
	if err == nil || ctx.Err() != nil {
		return
	}
	level := slog.LevelWarn
	if !s.sched.Connected() {
		level = slog.LevelDebug // the link says so already
	}
	s.log.Log(ctx, level, "syncing nodes to the store", "err", err)
}

// syncNodes asks the scheduler for its nodes, stores those that changed
// (nodeNeedsWrite) and deletes the stored ones it no longer lists. It
// returns the number of keys written or deleted. A record changed
// concurrently (conflict) is left to the next sync.
func (s *Service) syncNodes(ctx context.Context) (int, error) {
	nodes, err := s.sched.Nodes(ctx)
	if err != nil {
		return 0, err
	}
	var errs []error
	if err := s.syncNetworks(ctx, nodes); err != nil {
		errs = append(errs, fmt.Errorf("pod subnets: %w", err))
	}
	kvs, err := s.st.List(ctx, nodePrefix)
	if err != nil {
		return 0, fmt.Errorf("listing %s: %w", nodePrefix, err)
	}
	gone := make(map[string]store.KV, len(kvs))
	for _, kv := range kvs {
		gone[kv.Key] = kv
	}
	changed := 0
	for _, cur := range nodes {
		if !validNodeName(cur.Name) {
			s.log.Debug("node with an unusable name not stored", "node", cur.Name)
			continue
		}
		key := nodeKey(cur.Name)
		kv, had := gone[key]
		delete(gone, key)
		var prev *api.Node
		if had {
			if r, err := decode[api.Node](kv); err == nil {
				prev = &r.Value
			} // a corrupt record is overwritten
		}
		if !nodeNeedsWrite(prev, cur, s.cfg.NodesRefresh) {
			continue
		}
		data, err := json.Marshal(NodeRecord{ID: cur.Name, Name: cur.Name, Value: cur})
		if err != nil {
			errs = append(errs, fmt.Errorf("encoding node %s: %w", cur.Name, err))
			continue
		}
		_, err = s.st.Put(ctx, key, data, kv.Revision) // 0 when new
		switch {
		case err == nil:
			changed++
			s.recordNode(ctx, prev, cur)
		case !errors.Is(err, store.ErrConflict):
			errs = append(errs, fmt.Errorf("writing %s: %w", key, err))
		}
	}
	for key, kv := range gone {
		err := s.st.Delete(ctx, key, kv.Revision)
		switch {
		case err == nil:
			changed++
		case !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrConflict):
			errs = append(errs, fmt.Errorf("deleting %s: %w", key, err))
		}
	}
	return changed, errors.Join(errs...)
}

// recordNode records a node's registration and its status changes (from
// prev, nil when it was not stored, to cur).
func (s *Service) recordNode(ctx context.Context, prev *api.Node, cur api.Node) {
	switch {
	case prev == nil:
		s.Record(ctx, api.EventKindNode, cur.Name, api.EventRegistered, fmt.Sprintf("%s, address %s", cur.Status, cur.Address))
	case prev.Status == cur.Status:
	case cur.Status == "Ready":
		s.Record(ctx, api.EventKindNode, cur.Name, api.EventNodeReady, "was "+prev.Status)
	default:
		s.Record(ctx, api.EventKindNode, cur.Name, api.EventNodeLost, "now "+cur.Status+", last heartbeat "+cur.LastHeartbeat)
	}
}

// storedNodes returns the stored nodes as served while the scheduler is
// unreachable: status Unknown, stale.
func (s *Service) storedNodes(ctx context.Context) ([]NodeRecord, error) {
	recs, _, err := listAll[api.Node](ctx, s.st, nodePrefix, nil)
	if err != nil {
		return nil, err
	}
	items := make([]NodeRecord, 0, len(recs))
	for _, r := range recs {
		v := r.Value
		v.Status, v.Stale = api.NodeStatusUnknown, true
		if v.Kinds == nil {
			v.Kinds = []string{}
		}
		if v.Labels == nil {
			v.Labels = map[string]string{}
		}
		items = append(items, NodeRecord{ID: r.ID, Name: r.Name, Value: v})
	}
	return items, nil
}
