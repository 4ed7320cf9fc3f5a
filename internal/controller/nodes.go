package controller

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

	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/rik-org/rik/internal/store"
)

// Nodes in the store: the controller holding the lease copies the
// scheduler's node list to /node/{name}, so nodes.list can still answer
// (with stale records) while the scheduler is unreachable.

const nodePrefix = "/node/"

// Default periods of the node sync.
const (
	// DefaultNodesEvery is how often the lease holder asks the scheduler
	// for its nodes.
	DefaultNodesEvery = 5 * time.Second
	// DefaultNodesRefresh bounds how long a stored node may lag behind the
	// heartbeats when nothing else changed.
	DefaultNodesRefresh = 30 * time.Second
)

// NodeStatusUnknown is the status of a stored node served while the
// scheduler is unreachable.
const NodeStatusUnknown = "Unknown"

func nodeKey(name string) string { return nodePrefix + name }

type nodeRecord = record[NodeView]

// validNodeName reports whether name can be a key segment.
func validNodeName(name string) bool {
	return name != "" && len(name) <= 253 && !strings.ContainsAny(name, "/\x00") && strings.TrimSpace(name) == name
}

// stableNode is v without what changes on every heartbeat (time, usage,
// load), with empty kinds and labels made alike.
func stableNode(v NodeView) NodeView {
	v.Usage, v.Load1, v.LastHeartbeat, v.Stale = Resources{}, 0, "", false
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
func nodeNeedsWrite(stored *NodeView, cur NodeView, refresh time.Duration) bool {
	if stored == nil {
		return true
	}
	a, b := stableNode(*stored), stableNode(cur)
	if a.Name != b.Name || a.Status != b.Status || a.Capacity != b.Capacity || a.Allocated != b.Allocated ||
		a.Address != b.Address || a.Instances != b.Instances ||
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
func (s *Server) nodesLoop(ctx context.Context) {
	t := time.NewTicker(s.nodesEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.nodesKick:
		}
		s.nodesTick(ctx)
	}
}

// kickNodes asks nodesLoop to sync at once.
func (s *Server) kickNodes() {
	select {
	case s.nodesKick <- struct{}{}:
	default:
	}
}

// nodesTick syncs the nodes if this controller holds the lease.
func (s *Server) nodesTick(ctx context.Context) {
	if !s.lease.held.Load() {
		return
	}
	_, err := s.syncNodes(ctx)
	if err == nil || ctx.Err() != nil {
		return
	}
	level := slog.LevelWarn
	if !s.link.connected.Load() {
		level = slog.LevelDebug // the link says so already
	}
	s.log.Log(ctx, level, "syncing nodes to the store", "err", err)
}

// syncNodes asks the scheduler for its nodes, stores those that changed
// (nodeNeedsWrite) and deletes the stored ones it no longer lists. It
// returns the number of keys written or deleted. A record changed
// concurrently (conflict) is left to the next sync.
func (s *Server) syncNodes(ctx context.Context) (int, error) {
	callCtx, cancel := context.WithTimeout(ctx, s.callTimeout)
	list, err := s.link.client.ListNodes(callCtx, &emptypb.Empty{})
	cancel()
	if err != nil {
		return 0, fmt.Errorf("listing nodes of %s: %w", s.link.target, err)
	}
	kvs, err := s.cfg.Store.List(ctx, nodePrefix)
	if err != nil {
		return 0, fmt.Errorf("listing %s: %w", nodePrefix, err)
	}
	gone := make(map[string]store.KV, len(kvs))
	for _, kv := range kvs {
		gone[kv.Key] = kv
	}
	var errs []error
	changed := 0
	for _, n := range list.GetNodes() {
		if !validNodeName(n.GetName()) {
			s.log.Debug("node with an unusable name not stored", "node", n.GetName())
			continue
		}
		key := nodeKey(n.GetName())
		kv, had := gone[key]
		delete(gone, key)
		var prev *NodeView
		if had {
			if r, err := decode[NodeView](kv); err == nil {
				prev = &r.Value
			} // a corrupt record is overwritten
		}
		cur := nodeView(n)
		if !nodeNeedsWrite(prev, cur, s.nodesRefresh) {
			continue
		}
		data, err := json.Marshal(nodeRecord{ID: cur.Name, Name: cur.Name, Value: cur})
		if err != nil {
			errs = append(errs, fmt.Errorf("encoding node %s: %w", cur.Name, err))
			continue
		}
		_, err = s.cfg.Store.Put(ctx, key, data, kv.Revision) // 0 when new
		switch {
		case err == nil:
			changed++
		case !errors.Is(err, store.ErrConflict):
			errs = append(errs, fmt.Errorf("writing %s: %w", key, err))
		}
	}
	for key, kv := range gone {
		err := s.cfg.Store.Delete(ctx, key, kv.Revision)
		switch {
		case err == nil:
			changed++
		case !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrConflict):
			errs = append(errs, fmt.Errorf("deleting %s: %w", key, err))
		}
	}
	return changed, errors.Join(errs...)
}

// storedNodes returns the stored nodes as served while the scheduler is
// unreachable: status Unknown, stale.
func (s *Server) storedNodes(ctx context.Context) ([]nodeItem, error) {
	recs, _, err := listAll[NodeView](ctx, s.cfg.Store, nodePrefix)
	if err != nil {
		return nil, err
	}
	items := make([]nodeItem, 0, len(recs))
	for _, r := range recs {
		v := r.Value
		v.Status, v.Stale = NodeStatusUnknown, true
		if v.Kinds == nil {
			v.Kinds = []string{}
		}
		if v.Labels == nil {
			v.Labels = map[string]string{}
		}
		items = append(items, nodeItem{ID: r.ID, Name: r.Name, Value: v})
	}
	return items, nil
}
