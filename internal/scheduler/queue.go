package scheduler

import "sync"

// queue is an unbounded FIFO with a wake-up channel. Pushing never blocks,
// so it can be done while holding the state lock; one goroutine drains it and
// does the (possibly slow) gRPC sends without the lock.
type queue[T any] struct {
	mu    sync.Mutex
	items []T
	ready chan struct{} // receives a value when items may be non-empty
}

func newQueue[T any]() *queue[T] {
	return &queue[T]{ready: make(chan struct{}, 1)}
}

func (q *queue[T]) push(v T) {
	q.mu.Lock()
	q.items = append(q.items, v)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// drain takes every queued item.
func (q *queue[T]) drain() []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	items := q.items
	q.items = nil
	return items
}

// closer is a channel closed once, by the first close call.
type closer struct {
	once sync.Once
	ch   chan struct{}
}

func newCloser() *closer { return &closer{ch: make(chan struct{})} }

func (c *closer) close() { c.once.Do(func() { close(c.ch) }) }

// done is closed once close was called.
func (c *closer) done() <-chan struct{} { return c.ch }
