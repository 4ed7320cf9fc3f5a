package supervisor

import (
	"sync"
	"time"
)

// serializer runs the operations of one instance one after the other, in
// the order they were queued, each instance in its own goroutine: the
// operations of different instances run concurrently. It owns those
// goroutines and the timers that queue delayed operations.
type serializer struct {
	clock Clock

	mu      sync.Mutex
	pending map[string][]func() // per instance: operations waiting to run
	busy    int                 // operations queued or running
	idle    *sync.Cond          // signalled when busy drops to 0
	timers  map[int]Timer       // pending delayed operations
	timerN  int
	closed  bool
	wg      sync.WaitGroup
}

func newSerializer(clock Clock) *serializer {
	q := &serializer{clock: clock, pending: map[string][]func(){}, timers: map[int]Timer{}}
	q.idle = sync.NewCond(&q.mu)
	return q
}

// do runs f after every operation queued before it for instance id,
// unless the serializer is closed.
func (q *serializer) do(id string, f func()) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.busy++
	list, running := q.pending[id]
	q.pending[id] = append(list, f)
	if running {
		return
	}
	q.wg.Add(1)
	go q.work(id)
}

// work runs the operations of id until none is left.
func (q *serializer) work(id string) {
	defer q.wg.Done()
	for {
		q.mu.Lock()
		list := q.pending[id]
		if len(list) == 0 {
			delete(q.pending, id)
			q.mu.Unlock()
			return
		}
		next := list[0]
		q.pending[id] = list[1:]
		q.mu.Unlock()
		next()
		q.mu.Lock()
		if q.busy--; q.busy == 0 {
			q.idle.Broadcast()
		}
		q.mu.Unlock()
	}
}

// after queues f for instance id once d elapsed on the clock, unless the
// serializer is closed before.
func (q *serializer) after(d time.Duration, id string, f func()) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.timerN++
	n := q.timerN
	q.timers[n] = q.clock.AfterFunc(d, func() {
		q.mu.Lock()
		delete(q.timers, n)
		q.mu.Unlock()
		q.do(id, f)
	})
}

// drain waits until no operation is queued or running (delayed ones not
// due yet do not count).
func (q *serializer) drain() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.busy > 0 {
		q.idle.Wait()
	}
}

// close refuses new operations, stops the pending timers and waits for the
// operations queued already.
func (q *serializer) close() {
	q.mu.Lock()
	q.closed = true
	for n, t := range q.timers {
		t.Stop()
		delete(q.timers, n)
	}
	q.mu.Unlock()
	q.wg.Wait()
}
