package service

import (
	"cmp"
	"slices"
	"sync"
)

// Sizes of the feed.
const (
	// subscriberBuffer is how many events a slow subscriber may lag
	// before it is dropped.
	subscriberBuffer = 256
	// historySize is how many events are kept for subscribers resuming
	// from an id.
	historySize = 4096
)

// object is a record the feed knows: its kind, id, revision and item.
type object struct {
	kind string
	id   string
	rev  int64
	item any
}

// event is the event telling that o changed (or was removed) at id.
func (o object) event(id int64, deleted bool) Event {
	item := o.item
	if rec, ok := item.(InstanceRecord); ok && deleted {
		item = removedInstance(rec)
	}
	return Event{ID: id, Kind: o.kind, Deleted: deleted, Item: item}
}

// feed holds the records as last seen in the store, the recent events and
// the subscribers, under one lock: a subscriber gets its backlog and then
// every later event, with nothing between.
type feed struct {
	mu      sync.Mutex
	objects map[string]object // by store key
	history []Event           // ids ascending, at most historySize
	// since: history holds every event after it (unknownSince: none can
	// be replayed yet).
	since int64
	head  int64 // the last revision seen
	subs  map[*subscriber]struct{}
	// listed is closed by the first reset: subscribers wait for it.
	listed     chan struct{}
	listedOnce sync.Once
}

type subscriber struct {
	ch   chan Event
	kind filter
}

func newFeed() *feed {
	return &feed{objects: map[string]object{}, since: unknownSince, subs: map[*subscriber]struct{}{},
		listed: make(chan struct{})}
}

// reset replaces the records with a fresh listing of the store. Nothing
// can be replayed from before it (what changed in between is unknown):
// subscribers are dropped, to resume with a resync.
func (f *feed) reset(objects map[string]object) {
	if objects == nil {
		objects = map[string]object{}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.objects, f.history, f.since = objects, nil, unknownSince
	for _, o := range objects {
		f.head = max(f.head, o.rev)
	}
	for s := range f.subs {
		f.dropLocked(s)
	}
	f.listedOnce.Do(func() { close(f.listed) })
}

// apply records a change of key at rev (o: the new record unless
// deleted) and publishes it when it is news: later than every revision
// seen. It returns the record before and after.
func (f *feed) apply(key string, rev int64, deleted bool, o object) (old object, had bool, cur object, has bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	old, had = f.objects[key]
	if had && rev <= old.rev {
		return old, had, old, had // older than what the listing showed
	}
	news := rev > f.head
	f.head = max(f.head, rev)
	switch {
	case !deleted:
		f.objects[key] = o
		cur, has = o, true
		if news {
			f.publishLocked(o.event(rev, false))
		}
	case had:
		delete(f.objects, key)
		if news {
			f.publishLocked(old.event(rev, true))
		}
	case news:
		// The removal of a record the listing did not have: it was
		// removed before the listing. A subscriber from before it
		// needs a resync.
		f.since = max(f.gapFloor(), rev)
	}
	return old, had, cur, has
}

// gapFloor is since, or 0 while no event was published since the reset.
func (f *feed) gapFloor() int64 {
	if f.since == unknownSince {
		return 0
	}
	return f.since
}

func (f *feed) publishLocked(ev Event) {
	if f.since == unknownSince {
		// The first event after a listing: the watch delivers every
		// change after it.
		f.since = ev.ID
	}
	f.history = append(f.history, ev)
	if len(f.history) > historySize {
		f.since = f.history[0].ID
		f.history = slices.Delete(f.history, 0, 1)
	}
	for s := range f.subs {
		if !s.kind[ev.Kind] {
			continue
		}
		select {
		case s.ch <- ev:
		default:
			f.dropLocked(s)
		}
	}
}

func (f *feed) dropLocked(s *subscriber) {
	if _, ok := f.subs[s]; ok {
		delete(f.subs, s)
		close(s.ch)
	}
}

func (f *feed) subscribe(since int64, kinds []string) EventStream {
	s := &subscriber{ch: make(chan Event, subscriberBuffer), kind: newFilter(kinds)}
	f.mu.Lock()
	defer f.mu.Unlock()
	sub := EventStream{Head: f.head, C: s.ch}
	switch {
	case since < 0: // from now on
	case since > 0 && f.since != unknownSince && since >= f.since && since <= f.head:
		for _, ev := range f.history {
			if ev.ID > since && s.kind[ev.Kind] {
				sub.Backlog = append(sub.Backlog, ev)
			}
		}
	default:
		if since > f.head {
			since = 0 // an id from elsewhere (a store restored): all of it
		}
		for _, o := range f.objects {
			if o.rev > since && s.kind[o.kind] {
				sub.Backlog = append(sub.Backlog, o.event(o.rev, false))
			}
		}
		slices.SortFunc(sub.Backlog, func(a, b Event) int { return cmp.Compare(a.ID, b.ID) })
		sub.Sync, sub.SyncID = syncOf(f.objects, s.kind), f.head
	}
	f.subs[s] = struct{}{}
	sub.Cancel = func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.dropLocked(s)
	}
	return sub
}

func (f *feed) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}
