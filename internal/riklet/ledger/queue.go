package ledger

import (
	"sync"

	"github.com/rik-org/rik/api/proto/commonpb"
)

// queue holds the instance statuses waiting to be sent, in order. It is
// bounded: when full, older non-terminal statuses of an instance that has a
// later one queued are dropped (the latest status per instance wins); a
// terminal status is never dropped, so the queue may grow past its bound
// with terminal statuses and one status per instance.
type queue struct {
	mu    sync.Mutex
	items []*commonpb.InstanceMetric
	max   int
	ready chan struct{} // signalled (non-blocking) on push
}

func newQueue(max int) *queue {
	return &queue{max: max, ready: make(chan struct{}, 1)}
}

func terminalStatus(s commonpb.ResourceStatus) bool {
	return s == commonpb.ResourceStatus_FAILED || s == commonpb.ResourceStatus_TERMINATED
}

// push appends m.
func (q *queue) push(m *commonpb.InstanceMetric) {
	q.mu.Lock()
	if len(q.items) >= q.max {
		q.items = compact(q.items, m.GetInstanceId())
	}
	q.items = append(q.items, m)
	q.mu.Unlock()
	q.signal()
}

func (q *queue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// compact drops every non-terminal status that is followed by a later status
// of the same instance (newID counts as a later status of its instance).
func compact(items []*commonpb.InstanceMetric, newID string) []*commonpb.InstanceMetric {
	later := map[string]bool{newID: true}
	keep := make([]bool, len(items))
	for i := len(items) - 1; i >= 0; i-- {
		m := items[i]
		id := m.GetInstanceId()
		keep[i] = terminalStatus(m.GetStatus()) || !later[id]
		later[id] = true
	}
	out := items[:0]
	for i, m := range items {
		if keep[i] {
			out = append(out, m)
		}
	}
	for i := len(out); i < len(items); i++ {
		items[i] = nil
	}
	return out
}

// peek returns the first status, if any.
func (q *queue) peek() (*commonpb.InstanceMetric, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return nil, false
	}
	return q.items[0], true
}

// pop removes the first status if it is m (it may have been replaced by a
// reset meanwhile).
func (q *queue) pop(m *commonpb.InstanceMetric) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) > 0 && q.items[0] == m {
		q.items[0] = nil
		q.items = q.items[1:]
	}
}

// reset replaces the statuses of the instances in latest by latest, which
// goes first; queued statuses of other instances (for instance the final
// status of a removed instance) are kept after it, in order. The caller
// holds whatever lock makes latest current.
func (q *queue) reset(latest []*commonpb.InstanceMetric) {
	q.mu.Lock()
	known := make(map[string]bool, len(latest))
	for _, m := range latest {
		known[m.GetInstanceId()] = true
	}
	items := append([]*commonpb.InstanceMetric(nil), latest...)
	for _, m := range q.items {
		if !known[m.GetInstanceId()] {
			items = append(items, m)
		}
	}
	q.items = items
	q.mu.Unlock()
	q.signal()
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}
