package service

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/workload"
)

// Re-watch backoff.
const (
	backoffMin = 200 * time.Millisecond
	backoffMax = 5 * time.Second
)

// Event is one change of a workload, instance or node record.
type Event struct {
	// ID is the store revision of the change: it grows with every write
	// and survives restarts, so a client can resume from it.
	ID   int64
	Kind string // api.EventInstance, api.EventWorkload or api.EventNode
	// Deleted: the record was removed (an instance is then also
	// TERMINATED).
	Deleted bool
	// Item is the record: InstanceRecord, WorkloadRecord or NodeRecord.
	Item any
}

// Name is the event's name on the stream (api.Event*).
func (e Event) Name() string {
	if e.Deleted && e.Kind != api.EventInstance {
		return e.Kind + ".deleted"
	}
	return e.Kind
}

// EventStream is what a subscriber receives: first Backlog (events
// replayed, or a resync's records), then Sync when it is a resync, then
// the changes on C, which is closed when the subscriber lags too far
// behind or the service lost track of the store (the subscriber resumes
// from the last id it got).
type EventStream struct {
	Backlog []Event
	// Sync, when not nil, ends a resync: the ids of every record of the
	// kinds asked for, current at SyncID.
	Sync   *api.Sync
	SyncID int64
	// Head is the id of the last change the stream holds.
	Head   int64
	C      <-chan Event
	Cancel func()
}

// Subscribe follows the workload, instance and node records in the store,
// whoever wrote them, for the kinds asked (nil: all). since is the id of
// the last event the subscriber has (< 0: none, follow from now; 0: send
// every record first). Events after since still held are replayed; when
// they are not (since too old, from before a restart, or 0), the
// subscriber gets a resync: every record changed after since (all of them
// when since is 0 or unknown), then the ids of all that exist. It waits
// for Run's first listing of the store, or ctx.
func (s *Service) Subscribe(ctx context.Context, since int64, kinds []string) (EventStream, error) {
	select {
	case <-s.events.listed:
		return s.events.subscribe(since, kinds), nil
	case <-ctx.Done():
		return EventStream{}, fmt.Errorf("subscribing to events: %w", ctx.Err())
	}
}

// watchRecords follows the records in the store and publishes every change
// to subscribers and the instances-by-status gauge. It re-lists and
// re-watches when the watch breaks.
func (s *Service) watchRecords(ctx context.Context) {
	wait := backoffMin
	for ctx.Err() == nil {
		started := time.Now()
		err := s.watchOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > 10*time.Second {
			wait = backoffMin
		}
		s.log.Warn("record watch ended, re-watching", "err", err, "in", wait)
		if !sleep(ctx, wait) {
			return
		}
		wait = min(wait*2, backoffMax)
	}
}

// watchPrefixes are the records the stream follows, by kind.
var watchPrefixes = map[string]string{
	workloadPrefix: api.EventWorkload,
	instancePrefix: api.EventInstance,
	nodePrefix:     api.EventNode,
}

// kindOf is the kind of the record at key ("" for other keys).
func kindOf(key string) string {
	for p, k := range watchPrefixes {
		if strings.HasPrefix(key, p) {
			return k
		}
	}
	return ""
}

// watchOnce watches the whole store (one watch keeps the three kinds in
// revision order), lists the records after the watch started (so nothing
// falls in between), resets the feed with them, then applies changes until
// the watch ends.
func (s *Service) watchOnce(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := s.st.Watch(ctx, "/")
	if err != nil {
		return fmt.Errorf("watching the store: %w", err)
	}
	objects := map[string]object{}
	for prefix, kind := range watchPrefixes {
		kvs, err := s.st.List(ctx, prefix)
		if err != nil {
			return fmt.Errorf("listing %s: %w", prefix, err)
		}
		for _, kv := range kvs {
			if o, ok := decodeObject(kind, kv); ok {
				objects[kv.Key] = o
			}
		}
	}
	s.events.reset(objects)
	s.metrics.resetInstances(instancesOf(objects))
	s.metrics.watches.Inc()
	for ev := range ch {
		s.applyEvent(ev)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("watch channel closed")
}

func instancesOf(objects map[string]object) map[string]InstanceRecord {
	out := map[string]InstanceRecord{}
	for k, o := range objects {
		if rec, ok := o.item.(InstanceRecord); ok {
			out[k] = rec
		}
	}
	return out
}

// decodeObject decodes a stored record of kind; false when it does not
// decode (it is left out of the stream).
func decodeObject(kind string, kv store.KV) (object, bool) {
	var item any
	var id string
	var err error
	switch kind {
	case api.EventInstance:
		var r InstanceRecord
		r, err = decode[workload.Instance](kv)
		item, id = r, r.ID
	case api.EventWorkload:
		var r WorkloadRecord
		r, err = decode[workload.Workload](kv)
		item, id = r, r.ID
	case api.EventNode:
		var r NodeRecord
		r, err = decode[api.Node](kv)
		item, id = r, r.ID
	}
	if err != nil || id == "" {
		return object{}, false
	}
	return object{kind: kind, id: id, rev: kv.Revision, item: item}, true
}

// applyEvent applies one store change to the feed and the gauge.
func (s *Service) applyEvent(ev store.Event) {
	kind := kindOf(ev.KV.Key)
	if kind == "" {
		return
	}
	var o object
	if ev.Type == store.EventPut {
		var ok bool
		if o, ok = decodeObject(kind, ev.KV); !ok {
			return
		}
	}
	old, had, cur, has := s.events.apply(ev.KV.Key, ev.KV.Revision, ev.Type == store.EventDelete, o)
	if kind != api.EventInstance {
		return
	}
	if had {
		s.metrics.instanceGone(old.item.(InstanceRecord).Value.Status)
	}
	if has {
		s.metrics.instanceSeen(cur.item.(InstanceRecord).Value.Status)
	}
}

// removedInstance is the TERMINATED record sent for a removed instance.
func removedInstance(rec InstanceRecord) InstanceRecord {
	if !rec.Value.Status.Terminal() {
		rec.Value.Reason, rec.Value.Message = api.ReasonDeleted, ""
	}
	rec.Value.Status = workload.StatusTerminated
	return rec
}

// unknownSince marks a feed that cannot replay yet: it was just reset
// from a listing, and the store's revision at that listing is unknown.
const unknownSince = math.MaxInt64

// filter is the set of kinds a subscriber follows.
type filter map[string]bool

func newFilter(kinds []string) filter {
	f := filter{}
	for _, k := range kinds {
		f[k] = true
	}
	if len(f) == 0 {
		for _, k := range api.EventKinds {
			f[k] = true
		}
	}
	return f
}

// syncOf lists the ids of the objects of the kinds in f, sorted.
func syncOf(objects map[string]object, f filter) *api.Sync {
	out := &api.Sync{}
	for _, o := range objects {
		if !f[o.kind] {
			continue
		}
		switch o.kind {
		case api.EventInstance:
			out.Instances = append(out.Instances, o.id)
		case api.EventWorkload:
			out.Workloads = append(out.Workloads, o.id)
		case api.EventNode:
			out.Nodes = append(out.Nodes, o.id)
		}
	}
	slices.Sort(out.Instances)
	slices.Sort(out.Workloads)
	slices.Sort(out.Nodes)
	return out
}
