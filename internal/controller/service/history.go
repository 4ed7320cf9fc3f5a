package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/store"
)

// The history of events: the last api.MaxEvents events of each workload,
// instance and node, kept at /events/{kind}/{name} (oldest first). Record
// only queues an event; a background writer, at most every historyEvery,
// appends what is queued to the records of the objects concerned, all in
// one transaction (store.PutAll), so recording never waits for the store
// and costs it one write per period, not one per event. The writes are
// not compare-and-set: two controllers recording events of the same
// object in the same instant may lose one of them. The live stream of
// instance changes is Subscribe's; this is what is kept.

const eventsPrefix = "/events/"

// maxQueuedEvents bounds the events waiting to be written; past it new
// ones are dropped (and counted).
const maxQueuedEvents = 10000

// flushTimeout bounds the last write of the queued events at shutdown.
const flushTimeout = 2 * time.Second

// historyEvery is the shortest period between two writes of the history.
const historyEvery = 250 * time.Millisecond

func eventsKey(kind, name string) string { return eventsPrefix + kind + "/" + name }

// checkEventRef validates the object an events query names.
func checkEventRef(kind, name string) error {
	switch kind {
	case api.EventKindWorkload, api.EventKindInstance, api.EventKindNode:
	default:
		return invalid("kind", "must be workload, instance or node")
	}
	if !validNodeName(name) {
		return invalid("name", "required: the name of the object")
	}
	return nil
}

// history is the queue of events not written yet.
type history struct {
	mu      sync.Mutex
	pending map[string][]api.Event // by key
	gone    map[string]bool        // keys to delete (their object was removed)
	queued  int
	wake    chan struct{} // capacity 1
}

func newHistory() *history {
	return &history{pending: map[string][]api.Event{}, gone: map[string]bool{}, wake: make(chan struct{}, 1)}
}

func (h *history) signal() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// add queues ev under key; false when the queue is full.
func (h *history) add(key string, ev api.Event) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.queued >= maxQueuedEvents {
		return false
	}
	delete(h.gone, key)
	h.pending[key] = append(h.pending[key], ev)
	h.queued++
	h.signal()
	return true
}

// forget drops what is queued under key and has its record deleted.
func (h *history) forget(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.queued -= len(h.pending[key])
	delete(h.pending, key)
	h.gone[key] = true
	h.signal()
}

// take empties the queue.
func (h *history) take() (pending map[string][]api.Event, gone map[string]bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	pending, gone = h.pending, h.gone
	h.pending, h.gone, h.queued = map[string][]api.Event{}, map[string]bool{}, 0
	return pending, gone
}

// queuedFor returns a copy of what is queued under key.
func (h *history) queuedFor(key string) []api.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]api.Event(nil), h.pending[key]...)
}

// appendEvents appends evs to list, folding an event equal to the last one
// (same reason and message) into it, and keeps the last max.
func appendEvents(list, evs []api.Event, max int) []api.Event {
	for _, ev := range evs {
		if n := len(list); n > 0 && list[n-1].Reason == ev.Reason && list[n-1].Message == ev.Message {
			list[n-1].Count = max1(list[n-1].Count) + max1(ev.Count)
			list[n-1].Time = ev.Time
			continue
		}
		list = append(list, ev)
	}
	if len(list) > max {
		list = append([]api.Event(nil), list[len(list)-max:]...)
	}
	return list
}

// max1 is a Count as a number of occurrences (0 means once).
func max1(n int) int { return max(n, 1) }

// Record records an event about the object kind/name (api.EventKind*):
// what happened (reason, one CamelCase word such as "RolloutProgress") and
// its details (message, no secrets: viewers read it). It never blocks: the
// event is written to the store in the background, by whichever
// controller records it (lost if the controller dies first, or dropped
// while maxQueuedEvents wait). Other parts of the controller, such as the
// rollout reconciler, record their progress with it.
func (s *Service) Record(_ context.Context, kind, name, reason, message string) {
	ev := api.Event{Time: s.now(), Kind: kind, Name: name, Reason: reason, Message: message}
	if !s.history.add(eventsKey(kind, name), ev) {
		s.metrics.eventsDropped.Inc()
		s.log.Debug("event dropped: too many waiting to be written", "kind", kind, "name", name, "reason", reason)
	}
}

// forgetEvents deletes the history of an object that is gone.
func (s *Service) forgetEvents(kind, name string) { s.history.forget(eventsKey(kind, name)) }

// Events returns the history of the object kind/name, oldest first (also
// the events still waiting to be written); none for an object without
// events, or one that does not exist.
func (s *Service) Events(ctx context.Context, kind, name string) ([]api.Event, error) {
	if err := checkEventRef(kind, name); err != nil {
		return nil, err
	}
	key := eventsKey(kind, name)
	list, err := s.storedEvents(ctx, key)
	if err != nil {
		return nil, err
	}
	list = appendEvents(list, s.history.queuedFor(key), api.MaxEvents)
	if list == nil {
		list = []api.Event{}
	}
	return list, nil
}

func (s *Service) storedEvents(ctx context.Context, key string) ([]api.Event, error) {
	kv, err := s.st.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", key, err)
	}
	var list []api.Event
	if err := json.Unmarshal(kv.Value, &list); err != nil {
		s.log.Warn("corrupt event history ignored", "key", key, "err", err)
		return nil, nil
	}
	return list, nil
}

// historyLoop writes the queued events until ctx is done, then writes
// what is left (bounded by flushTimeout).
func (s *Service) historyLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
			defer cancel()
			s.flushHistory(fctx)
			return
		case <-s.history.wake:
			s.flushHistory(ctx)
			sleep(ctx, historyEvery) // let the next events gather
		}
	}
}

// flushHistory deletes the histories of removed objects and appends the
// queued events to the others, in one transaction.
func (s *Service) flushHistory(ctx context.Context) {
	pending, gone := s.history.take()
	for key := range gone {
		if err := s.st.Delete(ctx, key, store.Any); err != nil && !errors.Is(err, store.ErrNotFound) {
			s.log.Warn("deleting event history", "key", key, "err", err)
		}
	}
	kvs := make([]store.KV, 0, len(pending))
	for _, key := range slices.Sorted(maps.Keys(pending)) {
		list, err := s.storedEvents(ctx, key)
		if err != nil {
			s.log.Warn("reading event history", "key", key, "events", len(pending[key]), "err", err)
			continue
		}
		data, err := json.Marshal(appendEvents(list, pending[key], api.MaxEvents))
		if err != nil {
			continue // events always encode
		}
		kvs = append(kvs, store.KV{Key: key, Value: data})
	}
	if len(kvs) == 0 {
		return
	}
	if err := store.PutAll(ctx, s.st, kvs); err != nil {
		s.log.Warn("writing event history", "objects", len(kvs), "err", err)
	}
}
