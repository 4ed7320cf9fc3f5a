package service

import (
	"context"
	"testing"
	"time"
)

// After a resumed stream the lease holder re-sends CREATE only for the
// live instances the scheduler lacks, and DESTROY for those being deleted;
// after a stream that did not resume, everything; a controller not holding
// the lease sends nothing.
func TestSubscribedProportional(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sub     Subscription
		leader  bool
		creates int // CREATE orders of the live instances
		unknown bool
	}{
		{"resumed", Subscription{Epoch: "e", Resumed: true, Head: 5}, true, 1, true},
		{"not resumed", Subscription{Epoch: "e"}, true, 4, false},
		{"not the holder", Subscription{Epoch: "e"}, false, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.workload("web")
			insts := f.instances("web", 5)
			if err := f.s.DeleteInstance(context.Background(), insts[4].ID); err != nil {
				t.Fatal(err)
			}
			f.sched.set(func(s *fakeScheduler) {
				s.orders = nil
				s.unknown = map[string]bool{insts[1].ID: true, insts[4].ID: true}
			})
			f.leader.Store(tc.leader)
			f.s.Stored(Cursor{Epoch: "e", Seq: 5}) // the replay is stored
			if err := f.s.Subscribed(context.Background(), tc.sub); err != nil {
				t.Fatal(err)
			}
			creates, destroys := 0, 0
			for _, o := range f.sched.orders {
				switch {
				case o.Action == Create:
					creates++
					if tc.unknown && o.InstanceID != insts[1].ID {
						t.Errorf("CREATE %s, which the scheduler has", o.InstanceName)
					}
				case o.Action == Destroy && o.InstanceID == insts[4].ID:
					destroys++
				}
			}
			wantDestroys := 0
			if tc.leader {
				wantDestroys = 1
			}
			if creates != tc.creates || destroys != wantDestroys {
				t.Errorf("%d CREATE and %d DESTROY, want %d and %d", creates, destroys, tc.creates, wantDestroys)
			}
		})
	}
}

// The position of the stored statuses is saved by the lease holder and
// read back, by this controller or another on the same store.
func TestCursorSavedAndResumed(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.CursorEvery = time.Millisecond })
	if got := f.s.Resume(context.Background()); got != (Cursor{}) {
		t.Fatalf("resume with nothing saved: %+v, want zero", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.s.cursorLoop(ctx) }()
	f.s.Stored(Cursor{Epoch: "e", Seq: 42})
	other := newFixtureOn(t, f.st)
	deadline := time.Now().Add(10 * time.Second)
	for other.s.Resume(context.Background()) != (Cursor{Epoch: "e", Seq: 42}) {
		if time.Now().After(deadline) {
			t.Fatalf("position not saved: another controller resumes at %+v", other.s.Resume(context.Background()))
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	// A controller further in the same run resumes at its own position;
	// one of another run at the saved one.
	other.s.Stored(Cursor{Epoch: "e", Seq: 50})
	if got := other.s.Resume(context.Background()); got.Seq != 50 {
		t.Errorf("resume = %+v, want its own e/50", got)
	}
	other.s.Stored(Cursor{Epoch: "old", Seq: 90})
	if got := other.s.Resume(context.Background()); got != (Cursor{Epoch: "e", Seq: 42}) {
		t.Errorf("resume = %+v, want the saved e/42", got)
	}
}

func TestLater(t *testing.T) {
	for _, tc := range []struct{ a, b, want Cursor }{
		{Cursor{"e", 3}, Cursor{"e", 5}, Cursor{"e", 5}},
		{Cursor{"e", 5}, Cursor{"e", 3}, Cursor{"e", 5}},
		{Cursor{"e", 5}, Cursor{"f", 9}, Cursor{"e", 5}},
		{Cursor{}, Cursor{"f", 9}, Cursor{"f", 9}},
		{Cursor{"e", 5}, Cursor{}, Cursor{"e", 5}},
	} {
		if got := later(tc.a, tc.b); got != tc.want {
			t.Errorf("later(%+v, %+v) = %+v, want %+v", tc.a, tc.b, got, tc.want)
		}
	}
	if !Resumable(Cursor{"e", 1}, "e") || Resumable(Cursor{"e", 0}, "e") || Resumable(Cursor{"e", 1}, "f") || Resumable(Cursor{}, "") {
		t.Error("Resumable: wrong")
	}
}

// A resumed subscription asks the scheduler what it lacks only once the
// replay is stored (up to the head the scheduler named).
func TestResumedWaitsForReplay(t *testing.T) {
	f := newFixture(t)
	f.workload("web")
	f.instances("web", 1)
	f.s.Stored(Cursor{Epoch: "e", Seq: 3})
	done := make(chan error, 1)
	go func() { done <- f.s.Subscribed(context.Background(), Subscription{Epoch: "e", Resumed: true, Head: 5}) }()
	time.Sleep(100 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("subscribed (%v) before the replay up to 5 was stored", err)
	default:
	}
	f.s.Stored(Cursor{Epoch: "e", Seq: 5})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
