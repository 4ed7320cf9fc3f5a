package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/workload"
)

// subscriberBuffer is how many events a slow SSE subscriber may lag before
// it is dropped.
const subscriberBuffer = 256

// broker fans instance events out to SSE subscribers without blocking.
type broker struct {
	mu   sync.Mutex
	subs map[chan []byte]struct{}
}

func newBroker() *broker { return &broker{subs: map[chan []byte]struct{}{}} }

// subscribe returns a channel of encoded events, closed when the subscriber
// is dropped for being slow, and a function to unsubscribe.
func (b *broker) subscribe() (<-chan []byte, func()) {
	ch := make(chan []byte, subscriberBuffer)
	b.mu.Lock()
	b.subs[ch] = struct{}{}
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if _, ok := b.subs[ch]; ok {
			delete(b.subs, ch)
			close(ch)
		}
	}
}

func (b *broker) publish(data []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- data:
		default:
			delete(b.subs, ch)
			close(ch)
		}
	}
}

func (b *broker) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// watchInstances follows the instance records in the store (whichever
// controller wrote them) and publishes every change to SSE subscribers and
// the instances-by-status gauge. It re-lists and re-watches when the watch
// breaks, publishing what changed in between.
func (s *Server) watchInstances(ctx context.Context) {
	wait := backoffMin
	var cache map[string]instanceRecord
	for ctx.Err() == nil {
		started := time.Now()
		var err error
		cache, err = s.watchOnce(ctx, cache)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > 10*time.Second {
			wait = backoffMin
		}
		s.log.Warn("instance watch ended, re-watching", "err", err, "in", wait)
		if !sleep(ctx, wait) {
			return
		}
		wait = min(wait*2, backoffMax)
	}
}

// watchOnce primes the cache from a listing made after the watch started
// (so nothing falls in between), publishing differences from the previous
// cache (nil the first time), then applies events until the watch ends. It
// returns the cache as last known.
func (s *Server) watchOnce(ctx context.Context, prev map[string]instanceRecord) (map[string]instanceRecord, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := s.cfg.Store.Watch(ctx, instancePrefix)
	if err != nil {
		return prev, fmt.Errorf("watching %s: %w", instancePrefix, err)
	}
	kvs, err := s.cfg.Store.List(ctx, instancePrefix)
	if err != nil {
		return prev, fmt.Errorf("listing %s: %w", instancePrefix, err)
	}
	cache := map[string]instanceRecord{}
	for _, kv := range kvs {
		if rec, err := decode[workload.Instance](kv); err == nil {
			cache[kv.Key] = rec
		}
	}
	if prev != nil {
		publishChanges(s, prev, cache)
	}
	s.metrics.resetInstances(cache)
	s.watches.Add(1)
	for ev := range ch {
		s.applyEvent(cache, ev)
	}
	if ctx.Err() != nil {
		return cache, ctx.Err()
	}
	return cache, errors.New("watch channel closed")
}

// publishChanges publishes the records that differ between two snapshots;
// removed ones go out as TERMINATED.
func publishChanges(s *Server, old, cur map[string]instanceRecord) {
	for key, rec := range cur {
		if o, ok := old[key]; !ok || o.ID != rec.ID || !sameInstance(o.Value, rec.Value) {
			s.publishInstance(rec)
		}
	}
	for key, rec := range old {
		if _, ok := cur[key]; !ok {
			publishRemoved(s, rec)
		}
	}
}

func (s *Server) applyEvent(cache map[string]instanceRecord, ev store.Event) {
	old, had := cache[ev.KV.Key]
	switch ev.Type {
	case store.EventPut:
		rec, err := decode[workload.Instance](ev.KV)
		if err != nil {
			return
		}
		cache[ev.KV.Key] = rec
		if had {
			s.metrics.instanceGone(old.Value.Status)
		}
		s.metrics.instanceSeen(rec.Value.Status)
		s.publishInstance(rec)
	case store.EventDelete:
		if !had {
			return
		}
		delete(cache, ev.KV.Key)
		s.metrics.instanceGone(old.Value.Status)
		publishRemoved(s, old)
	}
}

// publishRemoved publishes the TERMINATED event of a removed record.
func publishRemoved(s *Server, rec instanceRecord) {
	if !rec.Value.Status.Terminal() {
		rec.Value.Reason, rec.Value.Message = api.ReasonDeleted, ""
	}
	rec.Value.Status = workload.StatusTerminated
	s.publishInstance(rec)
}

func (s *Server) publishInstance(rec instanceRecord) {
	data, err := json.Marshal(rec)
	if err != nil {
		return
	}
	s.events.publish(data)
}

// handleEvents streams instance events as server-sent events.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.streamContext(r)
	defer cancel()
	rc := http.NewResponseController(w)
	ch, unsubscribe := s.events.subscribe()
	defer unsubscribe()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if s.writeChunk(w, rc, []byte(": connected\n\n")) != nil {
		return
	}
	tick := time.NewTicker(s.keepaliveEvery)
	defer tick.Stop()
	for {
		var chunk []byte
		select {
		case <-ctx.Done():
			return
		case data, ok := <-ch:
			if !ok {
				return // too slow: dropped
			}
			chunk = fmt.Appendf(nil, "event: instance\ndata: %s\n\n", data)
		case <-tick.C:
			chunk = []byte(": keepalive\n\n")
		}
		if s.writeChunk(w, rc, chunk) != nil {
			return
		}
	}
}
