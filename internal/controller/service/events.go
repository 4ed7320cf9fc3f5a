package service

import (
	"context"
	"errors"
	"fmt"
	"sync"
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

// subscriberBuffer is how many events a slow subscriber may lag before it
// is dropped.
const subscriberBuffer = 256

// Subscribe follows the instance records in the store, whoever wrote them:
// every change is sent on the channel (a removed instance once more, as
// TERMINATED), which is closed when the subscriber lags subscriberBuffer
// changes behind. cancel unsubscribes.
func (s *Service) Subscribe() (changes <-chan InstanceRecord, cancel func()) {
	return s.events.subscribe()
}

// broker fans instance changes out to subscribers without blocking.
type broker struct {
	mu   sync.Mutex
	subs map[chan InstanceRecord]struct{}
}

func newBroker() *broker { return &broker{subs: map[chan InstanceRecord]struct{}{}} }

// subscribe returns a channel of changes, closed when the subscriber is
// dropped for being slow, and a function to unsubscribe.
func (b *broker) subscribe() (<-chan InstanceRecord, func()) {
	ch := make(chan InstanceRecord, subscriberBuffer)
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

func (b *broker) publish(rec InstanceRecord) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- rec:
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
// controller wrote them) and publishes every change to subscribers and the
// instances-by-status gauge. It re-lists and re-watches when the watch
// breaks, publishing what changed in between.
func (s *Service) watchInstances(ctx context.Context) {
	wait := backoffMin
	var cache map[string]InstanceRecord
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
func (s *Service) watchOnce(ctx context.Context, prev map[string]InstanceRecord) (map[string]InstanceRecord, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := s.st.Watch(ctx, instancePrefix)
	if err != nil {
		return prev, fmt.Errorf("watching %s: %w", instancePrefix, err)
	}
	kvs, err := s.st.List(ctx, instancePrefix)
	if err != nil {
		return prev, fmt.Errorf("listing %s: %w", instancePrefix, err)
	}
	cache := map[string]InstanceRecord{}
	for _, kv := range kvs {
		if rec, err := decode[workload.Instance](kv); err == nil {
			cache[kv.Key] = rec
		}
	}
	if prev != nil {
		s.publishChanges(prev, cache)
	}
	s.metrics.resetInstances(cache)
	s.metrics.watches.Inc()
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
func (s *Service) publishChanges(old, cur map[string]InstanceRecord) {
	for key, rec := range cur {
		if o, ok := old[key]; !ok || o.ID != rec.ID || !sameInstance(o.Value, rec.Value) {
			s.events.publish(rec)
		}
	}
	for key, rec := range old {
		if _, ok := cur[key]; !ok {
			s.publishRemoved(rec)
		}
	}
}

func (s *Service) applyEvent(cache map[string]InstanceRecord, ev store.Event) {
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
		s.events.publish(rec)
	case store.EventDelete:
		if !had {
			return
		}
		delete(cache, ev.KV.Key)
		s.metrics.instanceGone(old.Value.Status)
		s.publishRemoved(old)
	}
}

// publishRemoved publishes the TERMINATED event of a removed record.
func (s *Service) publishRemoved(rec InstanceRecord) {
	if !rec.Value.Status.Terminal() {
		rec.Value.Reason, rec.Value.Message = api.ReasonDeleted, ""
	}
	rec.Value.Status = workload.StatusTerminated
	s.events.publish(rec)
}
