package service

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/store/bolt"
)

// fakeScheduler is a Scheduler that records the orders it gets and lists
// the nodes it is given; err, when set, fails every call.
type fakeScheduler struct {
	mu        sync.Mutex
	orders    []Order
	nodes     []api.Node
	err       error
	listCalls int
	logs      []LogChunk // what Logs streams
	down      atomic.Bool
	unknown   map[string]bool // ids Unknown reports
}

func (f *fakeScheduler) Schedule(_ context.Context, o Order) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.orders = append(f.orders, o)
	return f.err
}

func (f *fakeScheduler) Nodes(context.Context) ([]api.Node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listCalls++
	if f.err != nil {
		return nil, f.err
	}
	return slices.Clone(f.nodes), nil
}

func (f *fakeScheduler) Logs(_ context.Context, req LogRequest) (LogStream, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	return &chunks{left: slices.Clone(f.logs)}, nil
}

func (f *fakeScheduler) Connected() bool { return !f.down.Load() }

func (f *fakeScheduler) set(fn func(f *fakeScheduler)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeScheduler) ordersFor(id string) []Order {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Order
	for _, o := range f.orders {
		if o.InstanceID == id {
			out = append(out, o)
		}
	}
	return out
}

func (f *fakeScheduler) listCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.listCalls
}

// chunks streams its chunks, then io.EOF.
type chunks struct{ left []LogChunk }

func (c *chunks) Recv() (LogChunk, error) {
	if len(c.left) == 0 {
		return LogChunk{}, io.EOF
	}
	next := c.left[0]
	c.left = c.left[1:]
	return next, nil
}

// leader is a Leader tests switch.
type leader struct{ atomic.Bool }

func (l *leader) Held() bool { return l.Load() }

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fixture is a Service on a bolt store with a fake scheduler, holding the
// lease, on a fake clock; nothing runs in the background.
type fixture struct {
	t      testing.TB
	s      *Service
	st     store.Store
	sched  *fakeScheduler
	leader *leader
	clock  *fakeClock
}

func newFixture(t testing.TB, tune ...func(*Config)) *fixture {
	t.Helper()
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return newFixtureOn(t, st, tune...)
}

// newFixtureOn is a fixture on st.
func newFixtureOn(t testing.TB, st store.Store, tune ...func(*Config)) *fixture {
	f := &fixture{t: t, st: st, sched: &fakeScheduler{}, leader: &leader{},
		clock: &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}}
	f.leader.Store(true)
	cfg := Config{Store: st, Scheduler: f.sched, Leader: f.leader, Admission: DefaultAdmission(), Now: f.clock.Now}
	for _, fn := range tune {
		fn(&cfg)
	}
	f.s = New(cfg)
	return f
}

const podJSON = `{"kind":"Pod","name":%q,"spec":{"containers":[{"name":"web","image":"nginx"}]}%s}`

func podDef(name string) []byte { return fmt.Appendf(nil, podJSON, name, "") }

// workload stores a pod workload named name.
func (f *fixture) workload(name string) WorkloadRecord {
	f.t.Helper()
	rec, err := f.s.CreateWorkload(context.Background(), podDef(name))
	if err != nil {
		f.t.Fatal(err)
	}
	return rec
}

// instances creates n instances of the workload ref names.
func (f *fixture) instances(ref string, n int) []InstanceRecord {
	f.t.Helper()
	recs, err := f.s.CreateInstances(context.Background(), api.CreateInstancesRequest{WorkloadID: ref, Replicas: &n})
	if err != nil {
		f.t.Fatal(err)
	}
	return recs
}

// Unknown answers that the scheduler lacks the ids in f.unknown.
func (f *fakeScheduler) Unknown(_ context.Context, ids []string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	var out []string
	for _, id := range ids {
		if f.unknown[id] {
			out = append(out, id)
		}
	}
	return out, nil
}
