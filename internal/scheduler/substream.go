package scheduler

import (
	"container/list"
	"crypto/rand"
	"encoding/hex"
	"sync"

	"github.com/rik-org/rik/api/proto/commonpb"
)

// newEpoch names a scheduler run: sequence numbers restart with it.
func newEpoch() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// defaultCoalesceAfter is how many statuses a subscriber may hold before
// the statuses of an instance it has not read yet are replaced by newer
// ones.
const defaultCoalesceAfter = 1024

// subscriber is one status stream: the statuses not sent yet, in sequence
// order. While it keeps up it gets every status; once it holds
// coalesceAfter, a new status replaces the one of its instance not sent
// yet. A slow reader thus gets the latest status of every instance that
// changed, never an unbounded backlog, and is never dropped: what it holds
// is bounded by coalesceAfter plus the number of instances.
type subscriber struct {
	coalesceAfter int
	mu            sync.Mutex
	queue         list.List                // of *commonpb.WorkerStatus, by seq
	byID          map[string]*list.Element // the newest queued status of each instance
	wake          chan struct{}            // signalled (capacity 1) when one is queued
}

func newSubscriber(coalesceAfter int) *subscriber {
	return &subscriber{coalesceAfter: coalesceAfter, byID: map[string]*list.Element{}, wake: make(chan struct{}, 1)}
}

// push queues ws, which carries the highest seq so far, last; past
// coalesceAfter it replaces the status of its instance not sent yet (then
// it reports true).
func (sub *subscriber) push(ws *commonpb.WorkerStatus) (coalesced bool) {
	id := ws.GetInstance().GetInstanceId()
	sub.mu.Lock()
	if e := sub.byID[id]; e != nil && sub.queue.Len() >= sub.coalesceAfter {
		sub.queue.Remove(e)
		coalesced = true
	}
	sub.byID[id] = sub.queue.PushBack(ws)
	sub.mu.Unlock()
	select {
	case sub.wake <- struct{}{}:
	default:
	}
	return coalesced
}

// pop takes the oldest queued status; false when none is queued.
func (sub *subscriber) pop() (*commonpb.WorkerStatus, bool) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	e := sub.queue.Front()
	if e == nil {
		return nil, false
	}
	sub.queue.Remove(e)
	ws := e.Value.(*commonpb.WorkerStatus)
	if sub.byID[ws.GetInstance().GetInstanceId()] == e {
		delete(sub.byID, ws.GetInstance().GetInstanceId())
	}
	return ws, true
}

// queued is the number of statuses waiting to be sent.
func (sub *subscriber) queued() int {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	return sub.queue.Len()
}

// replayFrom tells which statuses a subscriber resuming at (epoch, after)
// of the run current needs: those recorded after seq from (0 replays
// everything). A cursor of another run, or from the future, replays
// everything.
func replayFrom(current, epoch string, after, last uint64) uint64 {
	if epoch != current || after > last {
		return 0
	}
	return after
}
