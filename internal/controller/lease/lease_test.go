package lease

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/store/bolt"
	"github.com/rik-org/rik/internal/testutil"
)

type runningLease struct {
	l      *Lease
	gains  atomic.Int32
	cancel context.CancelFunc
	done   chan struct{}
}

func startLease(t *testing.T, st store.Store, id string) *runningLease {
	t.Helper()
	r := &runningLease{done: make(chan struct{})}
	r.l = New(Config{Store: st, ID: id, Renew: 10 * time.Millisecond, TTL: time.Second, // a loaded machine may stall renewals for long
		Gained: func(context.Context) { r.gains.Add(1) }})
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { defer close(r.done); r.l.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

func (r *runningLease) stop() { r.cancel(); <-r.done }

// sharedStore hides bolt's Exclusive, standing in for a store several
// controllers share (etcd).
type sharedStore struct{ store.Store }

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, cond, func() string { return "waiting for " + what })
}

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
	eventually(t, "a holds", a.l.Held)
	b := startLease(t, st, "b")
	time.Sleep(300 * time.Millisecond) // many renew periods: a keeps renewing
	if !a.l.Held() || b.l.Held() {
		t.Fatalf("held: a=%v b=%v, want only a", a.l.Held(), b.l.Held())
	}
	a.stop() // releases the key
	eventually(t, "b takes over", b.l.Held)
	eventually(t, "b's gained callback", func() bool { return b.gains.Load() == 1 })
	if a.gains.Load() != 1 || b.gains.Load() != 1 {
		t.Errorf("gained callbacks a=%d b=%d, want 1 each", a.gains.Load(), b.gains.Load())
	}
}

// A holder that stops renewing without releasing (a crash) loses the lease
// after ttl, and notices it on its next step.
func TestLeaseExpiry(t *testing.T) {
	st := openShared(t)
	again := New(Config{Store: st, ID: "old"})
	if !again.step(t.Context()) {
		t.Fatal("first step did not acquire a free lease")
	}
	b := startLease(t, st, "b")
	time.Sleep(50 * time.Millisecond)
	if b.l.Held() {
		t.Fatal("b took a lease younger than ttl")
	}
	eventually(t, "b takes over the expired lease", b.l.Held)
	// the stale holder notices on its next step
	again.step(t.Context())
	if again.Held() {
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
	crashed := New(Config{Store: st, ID: "crashed"})
	if !crashed.step(t.Context()) {
		t.Fatal("first step did not acquire a free lease")
	}
	restarted := New(Config{Store: st, ID: "restarted", TTL: time.Hour})
	if !restarted.step(t.Context()) {
		t.Fatal("restarted controller did not take the leftover lease at once")
	}
}

// A holder whose renewals stall stops counting itself the holder before
// another controller may take over, and a renewal after that lapse counts
// as gaining the lease again (the holder catches up on what it skipped).
func TestLeaseLapsesWithoutRenewal(t *testing.T) {
	st := openShared(t)
	l := New(Config{Store: st, ID: "slow", Renew: 10 * time.Millisecond, TTL: 50 * time.Millisecond})
	if !l.step(t.Context()) || !l.Held() {
		t.Fatal("first step did not acquire a free lease")
	}
	if l.step(t.Context()) {
		t.Error("a timely renewal counted as gaining the lease")
	}
	time.Sleep(60 * time.Millisecond) // no renewal for more than ttl
	if l.Held() {
		t.Fatal("holder without a renewal for ttl still counts itself holding")
	}
	if !l.step(t.Context()) || !l.Held() {
		t.Error("renewal after the lapse did not count as gaining the lease")
	}
}

// A controller that does not hold the lease looks at the key several
// times per ttl, so that it takes over soon after ttl.
func TestLeasePollsWithinTTL(t *testing.T) {
	l := New(Config{Store: openShared(t), ID: "b"})
	if got := l.pollEvery(); got > DefaultTTL/5 {
		t.Errorf("poll every %s, want several per ttl %s", got, DefaultTTL)
	}
	if DefaultTTL+l.pollEvery()+DefaultRenew > 5*time.Second {
		t.Errorf("ttl %s + poll %s + renew %s: a crashed holder may be replaced after more than 5s", DefaultTTL, l.pollEvery(), DefaultRenew)
	}
}
