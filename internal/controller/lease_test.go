package controller

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/store/bolt"
)

type runningLease struct {
	l      *lease
	gains  atomic.Int32
	cancel context.CancelFunc
	done   chan struct{}
}

func startLease(t *testing.T, st store.Store, id string) *runningLease {
	t.Helper()
	r := &runningLease{done: make(chan struct{})}
	r.l = &lease{st: st, id: id, renew: 10 * time.Millisecond, ttl: 100 * time.Millisecond,
		log: testLogger(t), gained: func(context.Context) { r.gains.Add(1) }}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { defer close(r.done); r.l.run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

func (r *runningLease) stop() { r.cancel(); <-r.done }

// sharedStore hides bolt's Exclusive, standing in for a store several
// controllers share (etcd).
type sharedStore struct{ store.Store }

func openShared(t *testing.T) store.Store {
	t.Helper()
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return sharedStore{st}
}

func TestLeaseSingleHolderAndHandover(t *testing.T) {
	st := openShared(t)
	a := startLease(t, st, "a")
	eventually(t, "a holds", a.l.held.Load)
	b := startLease(t, st, "b")
	time.Sleep(300 * time.Millisecond) // several ttl periods: a keeps renewing
	if !a.l.held.Load() || b.l.held.Load() {
		t.Fatalf("held: a=%v b=%v, want only a", a.l.held.Load(), b.l.held.Load())
	}
	a.stop() // releases the key
	eventually(t, "b takes over", b.l.held.Load)
	eventually(t, "b's gained callback", func() bool { return b.gains.Load() == 1 })
	if a.gains.Load() != 1 || b.gains.Load() != 1 {
		t.Errorf("gained callbacks a=%d b=%d, want 1 each", a.gains.Load(), b.gains.Load())
	}
}

// A holder that stops renewing without releasing (a crash) loses the lease
// after ttl, and notices it on its next step.
func TestLeaseExpiry(t *testing.T) {
	st := openShared(t)
	again := &lease{st: st, id: "old", log: testLogger(t)}
	if !again.step(t.Context()) {
		t.Fatal("first step did not acquire a free lease")
	}
	b := startLease(t, st, "b")
	time.Sleep(50 * time.Millisecond)
	if b.l.held.Load() {
		t.Fatal("b took a lease younger than ttl")
	}
	eventually(t, "b takes over the expired lease", b.l.held.Load)
	// the stale holder notices on its next step
	again.step(t.Context())
	if again.held.Load() {
		t.Error("stale holder still believes it holds the lease")
	}
}

// On a store only one process can open (bolt), a key left by a crashed run
// is taken over at once: nobody else can be holding it.
func TestLeaseExclusiveStoreTakesLeftoverAtOnce(t *testing.T) {
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	crashed := &lease{st: st, id: "crashed", log: testLogger(t)}
	if !crashed.step(t.Context()) {
		t.Fatal("first step did not acquire a free lease")
	}
	restarted := &lease{st: st, id: "restarted", ttl: time.Hour, log: testLogger(t)}
	if !restarted.step(t.Context()) {
		t.Fatal("restarted controller did not take the leftover lease at once")
	}
}
