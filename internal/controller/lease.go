package controller

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rik-org/rik/internal/store"
)

// LeaseKey is the store key of the controllers' ingestion lease.
const LeaseKey = "/controller/leader"

// lease elects the one controller that ingests statuses and runs the resync
// when several share a store: every controller receives every status, and
// applying a stream twice at different speeds is not idempotent (a late
// RUNNING after a reschedule would reschedule again). The holder rewrites the
// key every renew period; the others take it over with compare-and-set once
// its revision has not moved for ttl (measured on their own clock, so no
// clock sync is needed). A controller stopping cleanly releases it at once;
// after a crash the others (or the restarted one) wait ttl.
type lease struct {
	st     store.Store
	id     string
	renew  time.Duration
	ttl    time.Duration
	log    *slog.Logger
	held   atomic.Bool
	gained func(ctx context.Context) // run (in its own goroutine) on acquire

	rev     int64     // revision we wrote last, while held
	seenRev int64     // revision of another holder, and when it last moved
	seenAt  time.Time //
}

// exclusiveStore is implemented by stores only one process can open (bolt).
type exclusiveStore interface{ Exclusive() bool }

type leaseValue struct {
	Holder    string    `json:"holder"`
	RenewedAt time.Time `json:"renewedAt"`
}

func (l *lease) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	defer l.release()
	for {
		if l.step(ctx) {
			wg.Add(1)
			go func() { defer wg.Done(); l.gained(ctx) }()
		}
		if !sleep(ctx, l.renew) {
			return
		}
	}
}

// step acquires, renews or watches the lease; true when just acquired.
func (l *lease) step(ctx context.Context) bool {
	val, _ := json.Marshal(leaseValue{Holder: l.id, RenewedAt: time.Now().UTC()})
	kv, err := l.st.Get(ctx, LeaseKey)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return l.put(ctx, val, 0)
	case err != nil:
		l.log.Warn("reading controller lease", "err", err)
		return false
	case l.held.Load() && kv.Revision == l.rev:
		l.put(ctx, val, l.rev)
		return false
	case l.held.Load():
		l.lose("taken over")
		return false
	}
	if ex, ok := l.st.(exclusiveStore); ok && ex.Exclusive() {
		// Only this process can open the store: the key is left over from
		// a crash of an earlier run, so take it over at once.
		return l.put(ctx, val, kv.Revision)
	}
	if kv.Revision != l.seenRev {
		l.seenRev, l.seenAt = kv.Revision, time.Now()
		return false
	}
	if time.Since(l.seenAt) < l.ttl {
		return false
	}
	var cur leaseValue
	_ = json.Unmarshal(kv.Value, &cur)
	l.log.Info("controller lease expired, taking over", "holder", cur.Holder)
	return l.put(ctx, val, kv.Revision)
}

// put writes the lease at rev; true when this acquires it.
func (l *lease) put(ctx context.Context, val []byte, rev int64) bool {
	newRev, err := l.st.Put(ctx, LeaseKey, val, rev)
	if err != nil {
		if l.held.Load() && errors.Is(err, store.ErrConflict) {
			l.lose("conflict on renew")
		} else if !errors.Is(err, store.ErrConflict) && ctx.Err() == nil {
			l.log.Warn("writing controller lease", "err", err)
		}
		return false
	}
	l.rev = newRev
	if l.held.Swap(true) {
		return false
	}
	l.log.Info("controller lease acquired: ingesting statuses", "holder", l.id)
	return true
}

func (l *lease) lose(why string) {
	if l.held.Swap(false) {
		l.log.Warn("controller lease lost", "why", why)
	}
}

// release deletes the lease on shutdown so another controller takes over at
// once.
func (l *lease) release() {
	if !l.held.Swap(false) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := l.st.Delete(ctx, LeaseKey, l.rev); err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrConflict) {
		l.log.Warn("releasing controller lease", "err", err)
	}
}
