package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/workload"
)

// Re-sync with the scheduler after a subscribe, proportional to what
// changed. The scheduler numbers the statuses of each of its runs (epoch,
// seq); the lease holder saves the position up to which it stored them
// (CursorKey), and a controller that subscribes (after a restart, a
// failover or a broken stream) resumes there: the scheduler replays only
// the instances whose status changed since, and is asked which live
// instances it lacks, to which alone CREATE is sent again. A scheduler of
// another run (it restarted) or one that does not number its statuses gets
// everything again, as before.

// CursorKey is the store key of the saved status stream position.
const CursorKey = "/controller/status-cursor"

// DefaultCursorEvery is how often the lease holder saves the position.
const DefaultCursorEvery = 500 * time.Millisecond

// unknownBatch is how many instance ids one UnknownInstances call carries.
const unknownBatch = 5000

// replayWait bounds how long a resumed subscription waits for the replay
// to be stored before asking the scheduler what it lacks.
const replayWait = 10 * time.Second

// Cursor is a position in a scheduler's status stream: after the status
// numbered Seq of the scheduler run Epoch.
type Cursor struct {
	Epoch string `json:"epoch"`
	Seq   uint64 `json:"seq"`
}

// Subscription describes a status stream the scheduler just opened.
type Subscription struct {
	// Epoch is the scheduler's run; "" for a scheduler that does not
	// number its statuses.
	Epoch string
	// Resumed: the stream resumed at the cursor Resume gave, of this run:
	// the scheduler holds every order sent to it before.
	Resumed bool
	// Head is the number of the last status the scheduler had recorded
	// when it subscribed: its replay ends there.
	Head uint64
}

// Resumable says whether a stream of the run epoch, asked for at cursor
// c, resumes there.
func Resumable(c Cursor, epoch string) bool {
	return epoch != "" && c.Epoch == epoch && c.Seq > 0
}

// cursorState is the position up to which statuses were stored.
type cursorState struct {
	mu    sync.Mutex
	cur   Cursor // the last position reported by the session
	saved Cursor // the last position written to the store
}

// Stored records that every status up to c was ingested (the scheduler
// session reports it in order; the lease holder saves it).
func (s *Service) Stored(c Cursor) {
	s.cursor.mu.Lock()
	defer s.cursor.mu.Unlock()
	s.cursor.cur = c
}

// Resume is where the scheduler session resumes its status stream: the
// position saved in the store, or this controller's own if it is further
// in the same run. A zero Cursor replays everything.
func (s *Service) Resume(ctx context.Context) Cursor {
	saved, err := s.loadCursor(ctx)
	if err != nil {
		s.log.Warn("reading the status stream position: replaying every status", "err", err)
	}
	s.cursor.mu.Lock()
	defer s.cursor.mu.Unlock()
	return later(saved, s.cursor.cur)
}

// later returns b if it is further than a in the same run, else a; b of
// another run only replaces an empty a.
func later(a, b Cursor) Cursor {
	if (a.Epoch == b.Epoch && b.Seq > a.Seq) || (a.Epoch == "" && b.Epoch != "") {
		return b
	}
	return a
}

func (s *Service) loadCursor(ctx context.Context) (Cursor, error) {
	kv, err := s.st.Get(ctx, CursorKey)
	if errors.Is(err, store.ErrNotFound) {
		return Cursor{}, nil
	}
	if err != nil {
		return Cursor{}, fmt.Errorf("reading %s: %w", CursorKey, err)
	}
	var c Cursor
	if err := json.Unmarshal(kv.Value, &c); err != nil {
		return Cursor{}, fmt.Errorf("decoding %s: %w", CursorKey, err)
	}
	return c, nil
}

// cursorLoop saves the position while this controller holds the lease, at
// most every CursorEvery and only when it moved.
func (s *Service) cursorLoop(ctx context.Context) {
	for sleep(ctx, s.cfg.CursorEvery) {
		s.cursor.mu.Lock()
		cur, saved := s.cursor.cur, s.cursor.saved
		s.cursor.mu.Unlock()
		if cur == saved || cur.Epoch == "" || !s.leader.Held() {
			continue
		}
		data, _ := json.Marshal(cur) // a Cursor always encodes
		if _, err := s.st.Put(ctx, CursorKey, data, store.Any); err != nil {
			if ctx.Err() == nil {
				s.log.Warn("saving the status stream position", "err", err)
			}
			continue
		}
		s.cursor.mu.Lock()
		s.cursor.saved = cur
		s.cursor.mu.Unlock()
	}
}

// Subscribed is called by the scheduler session once it is subscribed (it
// reads statuses meanwhile): it syncs the nodes and, if this controller
// holds the lease, re-sends the desired state: after a resumed stream,
// DESTROY for the instances being deleted and CREATE for the live ones the
// scheduler lacks; otherwise CREATE for every live instance and DESTROY
// for every one being deleted. The scheduler answers with their statuses.
// A controller gaining the lease subscribes again, so one not holding it
// sends nothing.
func (s *Service) Subscribed(ctx context.Context, sub Subscription) error {
	s.kickNodes()
	if !s.leader.Held() {
		return nil
	}
	if !sub.Resumed {
		return s.resend(ctx, func(workload.Instance, bool) bool { return true })
	}
	// An instance that ended (and that the scheduler forgot) since the
	// position is stored as ended once the replay is: not taken for one
	// the scheduler lacks and created again.
	if !s.awaitStored(ctx, Cursor{Epoch: sub.Epoch, Seq: sub.Head}) {
		s.log.Warn("the replayed statuses are not all stored yet: asking the scheduler what it lacks anyway", "head", sub.Head)
	}
	insts, _, err := s.repo.listInstances(ctx)
	if err != nil {
		return err
	}
	missing, err := s.unknownLive(ctx, insts)
	if err != nil {
		return err
	}
	s.log.Info("status stream resumed", "instances", len(insts), "unknown_to_scheduler", len(missing))
	return s.resend(ctx, func(i workload.Instance, workloadExists bool) bool {
		return i.DeleteRequested || !workloadExists || missing[i.ID]
	})
}

// awaitStored waits until every status up to c is stored, at most
// replayWait; false when it did not happen.
func (s *Service) awaitStored(ctx context.Context, c Cursor) bool {
	deadline := time.Now().Add(replayWait)
	for {
		s.cursor.mu.Lock()
		cur := s.cursor.cur
		s.cursor.mu.Unlock()
		if cur.Epoch == c.Epoch && cur.Seq >= c.Seq {
			return true
		}
		if time.Now().After(deadline) || !sleep(ctx, 20*time.Millisecond) {
			return false
		}
	}
}

// unknownLive asks the scheduler which of the live instances it lacks.
func (s *Service) unknownLive(ctx context.Context, insts []InstanceRecord) (map[string]bool, error) {
	var live []string
	for _, rec := range insts {
		if i := rec.Value; !i.DeleteRequested && !i.Status.Terminal() {
			live = append(live, i.ID)
		}
	}
	missing := map[string]bool{}
	for batch := range slices.Chunk(live, unknownBatch) {
		ids, err := s.sched.Unknown(ctx, batch)
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			missing[id] = true
		}
	}
	return missing, nil
}
