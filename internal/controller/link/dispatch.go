package link

import (
	"context"
	"hash/fnv"
	"sync"

	"github.com/rik-org/rik/internal/controller/service"
)

// Statuses are ingested by several workers, each owning the instances
// whose id hashes to it: a status waits for the store only behind those
// of its own instances (in order), not behind every other instance's (the
// replay after a scheduler restart is stored at the store's concurrent
// speed, not one write after another). A full worker stops the reading
// of the stream, and the scheduler keeps only the latest status of each
// instance meanwhile.
const (
	ingestWorkers = 16
	workerQueue   = 64
)

// dispatcher hands statuses to the workers and tracks the position up to
// which every status was stored.
type dispatcher struct {
	h       Handler
	queues  []chan service.Status
	wg      sync.WaitGroup
	mu      sync.Mutex
	at      service.Cursor  // every status up to at was stored
	stopAt  uint64          // the first status not stored (0: none): at stays below
	pending []uint64        // seqs handed out and not all done, in order
	done    map[uint64]bool // of those, the ones done
}

// newDispatcher starts the workers, ingesting with ctx, the statuses of a
// stream starting after at (numbered: at.Epoch is not empty). A stream
// resumed after at starts there: h is told so.
func newDispatcher(ctx context.Context, h Handler, at service.Cursor) *dispatcher {
	d := &dispatcher{h: h, at: at, done: map[uint64]bool{}}
	if at.Epoch != "" && at.Seq > 0 {
		h.Stored(at)
	}
	for range ingestWorkers {
		q := make(chan service.Status, workerQueue)
		d.queues = append(d.queues, q)
		d.wg.Go(func() {
			for st := range q {
				// After the stream ended, what is left is not stored:
				// the next stream replays it.
				d.finish(st.At.Seq, ctx.Err() == nil && h.Ingest(ctx, st))
			}
		})
	}
	return d
}

// dispatch queues st for the worker of its instance; it blocks while that
// worker is full.
func (d *dispatcher) dispatch(st service.Status) {
	d.mu.Lock()
	if d.at.Epoch != "" && st.At.Seq > d.at.Seq {
		d.pending = append(d.pending, st.At.Seq)
	}
	d.mu.Unlock()
	d.queues[workerOf(st.InstanceID)] <- st
}

// close ends the workers once they have ingested what is queued.
func (d *dispatcher) close() {
	for _, q := range d.queues {
		close(q)
	}
	d.wg.Wait()
}

// finish records that the status numbered seq was dealt with (stored or
// not) and reports the position when it moved (in order: under the lock).
func (d *dispatcher) finish(seq uint64, stored bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if seq == 0 {
		return
	}
	d.done[seq] = true
	if !stored && (d.stopAt == 0 || seq < d.stopAt) {
		d.stopAt = seq
	}
	moved := false
	for len(d.pending) > 0 && d.done[d.pending[0]] && (d.stopAt == 0 || d.pending[0] < d.stopAt) {
		delete(d.done, d.pending[0])
		d.at.Seq, moved = d.pending[0], true
		d.pending = d.pending[1:]
	}
	if moved {
		d.h.Stored(d.at)
	}
}

// workerOf is the worker owning an instance.
func workerOf(id string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return int(h.Sum32() % ingestWorkers)
}
