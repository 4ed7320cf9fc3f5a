// Package lease elects, among the controllers sharing a store, the one
// that ingests statuses, re-sends orders and syncs nodes.
package lease

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

// Key is the store key of the controllers' ingestion lease.
const Key = "/controller/leader"

// Defaults of Config: a crashed holder is replaced within about
// DefaultTTL plus a poll (≤ 5 s), for one small write per second.
const (
	DefaultRenew = 1 * time.Second
	DefaultTTL   = 3 * time.Second
)

// Config configures a Lease.
type Config struct {
	Store store.Store
	ID    string        // the holder's name, unique among the controllers
	Renew time.Duration // how often the holder rewrites the key; DefaultRenew
	TTL   time.Duration // how long an unmoved key is waited for; DefaultTTL
	// Gained is run (in its own goroutine) each time the lease is
	// acquired, or renewed after it lapsed (Held was false meanwhile);
	// nil: nothing.
	Gained func(ctx context.Context)
	Logger *slog.Logger // nil: discarded
}

// Lease elects the one controller that ingests statuses and runs the
// resync when several share a store: every controller receives every
// status, and applying a stream twice at different speeds is not
// idempotent (a late RUNNING after a reschedule would reschedule again).
// The holder rewrites the key every renew period; the others take it over
// with compare-and-set once its revision has not moved for ttl (measured on
// their own clock, so no clock sync is needed). A controller stopping
// cleanly releases it at once; after a crash the others (or the restarted
// one) wait ttl, polling the key several times per ttl. The holder counts
// itself holding only until 9/10 of ttl after its last successful renew
// began: one whose renewals stall (a slow store, a paused process) stops
// ingesting before another can take over.
type Lease struct {
	cfg        Config
	held       atomic.Bool
	base       time.Time    // monotonic origin of validUntil
	validUntil atomic.Int64 // since base: Held is false from then on

	rev     int64     // revision we wrote last, while held
	seenRev int64     // revision of another holder, and when it last moved
	seenAt  time.Time //
}

// exclusiveStore is implemented by stores only one process can open (bolt).
type exclusiveStore interface{ Exclusive() bool }

// Value is what the key holds.
type Value struct {
	Holder    string    `json:"holder"`
	RenewedAt time.Time `json:"renewedAt"`
}

// New returns a lease, not held until Run acquires it.
func New(cfg Config) *Lease {
	if cfg.Renew <= 0 {
		cfg.Renew = DefaultRenew
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Gained == nil {
		cfg.Gained = func(context.Context) {}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Lease{cfg: cfg, base: time.Now()}
}

// Held reports whether this controller holds the lease.
func (l *Lease) Held() bool { return l.held.Load() && l.valid() }

// valid reports whether the last renewal is recent enough to act on.
func (l *Lease) valid() bool { return int64(time.Since(l.base)) < l.validUntil.Load() }

// pollEvery is the period of the steps: the holder renews every renew
// period; the others look at the key several times per ttl.
func (l *Lease) pollEvery() time.Duration {
	if l.held.Load() {
		return l.cfg.Renew
	}
	return min(l.cfg.Renew, l.cfg.TTL/6)
}

// ID is the holder name this controller writes.
func (l *Lease) ID() string { return l.cfg.ID }

// Run acquires, renews or watches the lease until ctx is done, then
// releases it.
func (l *Lease) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	defer l.release()
	for {
		if l.step(ctx) {
			wg.Go(func() { l.cfg.Gained(ctx) })
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(l.pollEvery()):
		}
	}
}

// step acquires, renews or watches the lease; true when just acquired (or
// renewed after it lapsed).
func (l *Lease) step(ctx context.Context) bool {
	started := time.Since(l.base)
	val, _ := json.Marshal(Value{Holder: l.cfg.ID, RenewedAt: time.Now().UTC()})
	kv, err := l.cfg.Store.Get(ctx, Key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return l.put(ctx, val, 0, started)
	case err != nil:
		l.cfg.Logger.Warn("reading controller lease", "err", err)
		return false
	case l.held.Load() && kv.Revision == l.rev:
		return l.put(ctx, val, l.rev, started)
	case l.held.Load():
		l.lose("taken over")
		return false
	}
	if ex, ok := l.cfg.Store.(exclusiveStore); ok && ex.Exclusive() {
		// Only this process can open the store: the key is left over from
		// a crash of an earlier run, so take it over at once.
		return l.put(ctx, val, kv.Revision, started)
	}
	if kv.Revision != l.seenRev {
		l.seenRev, l.seenAt = kv.Revision, time.Now()
		return false
	}
	if time.Since(l.seenAt) < l.cfg.TTL {
		return false
	}
	var cur Value
	_ = json.Unmarshal(kv.Value, &cur)
	l.cfg.Logger.Info("controller lease expired, taking over", "holder", cur.Holder)
	return l.put(ctx, val, kv.Revision, started)
}

// put writes the lease at rev, a step begun at started; true when this
// acquires it, or renews it after it lapsed.
func (l *Lease) put(ctx context.Context, val []byte, rev int64, started time.Duration) bool {
	newRev, err := l.cfg.Store.Put(ctx, Key, val, rev)
	if err != nil {
		if l.held.Load() && errors.Is(err, store.ErrConflict) {
			l.lose("conflict on renew")
		} else if !errors.Is(err, store.ErrConflict) && ctx.Err() == nil {
			l.cfg.Logger.Warn("writing controller lease", "err", err)
		}
		return false
	}
	l.rev = newRev
	lapsed := l.held.Load() && !l.valid()
	l.validUntil.Store(int64(started + l.cfg.TTL*9/10))
	switch {
	case lapsed:
		l.cfg.Logger.Warn("controller lease renewed after it lapsed: catching up", "holder", l.cfg.ID)
		return true
	case l.held.Swap(true):
		return false
	}
	l.cfg.Logger.Info("controller lease acquired: ingesting statuses", "holder", l.cfg.ID)
	return true
}

func (l *Lease) lose(why string) {
	if l.held.Swap(false) {
		l.cfg.Logger.Warn("controller lease lost", "why", why)
	}
}

// release deletes the lease on shutdown so another controller takes over at
// once.
func (l *Lease) release() {
	if !l.held.Swap(false) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := l.cfg.Store.Delete(ctx, Key, l.rev); err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrConflict) {
		l.cfg.Logger.Warn("releasing controller lease", "err", err)
	}
}
