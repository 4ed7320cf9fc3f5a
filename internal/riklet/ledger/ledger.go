// Package ledger is the node's record of the instances it owns, kept on
// disk so that a restarted riklet adopts what still runs, and the queue of
// the statuses waiting to be sent to the scheduler. Every change of an
// entry queues the entry's new status in the same step: what the
// scheduler hears and what the node records never disagree.
package ledger

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/internal/atomicfile"
	"github.com/rik-org/rik/internal/workload"
)

// LastStatus is the last status the node reported for an instance.
type LastStatus struct {
	Status   workload.Status        `json:"status"`
	IP       string                 `json:"ip,omitempty"`
	Ports    []workload.PortMapping `json:"ports,omitempty"`
	Reason   string                 `json:"reason,omitempty"`
	Message  string                 `json:"message,omitempty"`
	ExitCode *int                   `json:"exitCode,omitempty"`
	Timings  map[string]int64       `json:"timings_ms,omitempty"`
	// Ready: RUNNING and every readiness probe passes (see package probe).
	Ready bool `json:"ready,omitempty"`
}

// Entry is one instance the node owns.
type Entry struct {
	InstanceID string          `json:"instanceId"`
	Name       string          `json:"name"`
	WorkloadID string          `json:"workloadId"`
	Kind       workload.Kind   `json:"kind"`
	Definition json.RawMessage `json:"definition"`
	Last       LastStatus      `json:"last"`
	Restarts   int             `json:"restarts"`
	CreatedAt  time.Time       `json:"createdAt"`
}

// File is the on-disk shape of the ledger.
type File struct {
	Version   int     `json:"version"`
	Instances []Entry `json:"instances"`
}

// DefaultQueueMax bounds the status queue (see Open).
const DefaultQueueMax = 1024

// Ledger is the node's record of the instances it owns, kept in one JSON
// file written atomically, and the queue of statuses to send. It is safe
// for concurrent use. Every change is queued and saved before the method
// making it returns; concurrent changes share one write (group commit).
type Ledger struct {
	path  string
	log   *slog.Logger
	queue *queue

	mu       sync.Mutex // guards entries, the save state, and makes a change and its queued status one step
	entries  map[string]Entry
	changes  uint64 // changes made
	saved    uint64 // changes on disk
	saving   bool
	saveDone *sync.Cond
}

// Open loads the ledger at path (a missing file is an empty ledger). A
// file that cannot be decoded is moved aside to path.corrupt-<unix> and an
// empty ledger is returned. The status queue holds about queueMax
// statuses (DefaultQueueMax when queueMax <= 0; see queue).
func Open(path string, queueMax int, log *slog.Logger) (*Ledger, error) {
	if queueMax <= 0 {
		queueMax = DefaultQueueMax
	}
	l := &Ledger{path: path, log: log, queue: newQueue(queueMax), entries: map[string]Entry{}}
	l.saveDone = sync.NewCond(&l.mu)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading ledger %s: %w", path, err)
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		aside := fmt.Sprintf("%s.corrupt-%d", path, time.Now().Unix())
		log.Error("ledger is corrupt, moving it aside and starting empty", "path", path, "aside", aside, "error", err)
		if rerr := os.Rename(path, aside); rerr != nil {
			return nil, fmt.Errorf("moving corrupt ledger aside: %w", rerr)
		}
		return l, nil
	}
	for _, e := range f.Instances {
		if e.InstanceID == "" {
			log.Warn("ledger entry without instance id ignored", "name", e.Name)
			continue
		}
		l.entries[e.InstanceID] = e
	}
	return l, nil
}

// Get returns the entry of an instance.
func (l *Ledger) Get(id string) (Entry, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.entries[id]
	return e, ok
}

// List returns every entry, oldest first.
func (l *Ledger) List() []Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.listLocked()
}

func (l *Ledger) listLocked() []Entry {
	out := make([]Entry, 0, len(l.entries))
	for _, e := range l.entries {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].InstanceID < out[j].InstanceID
	})
	return out
}

// Len is the number of entries.
func (l *Ledger) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

// Add records a new entry, queues its status and saves. If it cannot be
// saved it is removed again (its status stays queued) and the error is
// returned: the node must not run what it has not recorded.
func (l *Ledger) Add(e Entry) error {
	l.mu.Lock()
	l.entries[e.InstanceID] = e
	l.changes++
	l.queue.push(metric(e))
	l.mu.Unlock()
	if err := l.Sync(); err != nil {
		l.mu.Lock()
		delete(l.entries, e.InstanceID)
		l.changes++
		l.mu.Unlock()
		return err
	}
	return nil
}

// Update changes the entry of id with fn, queues its new status and saves
// the ledger (a failed save is logged; the next one retries it). It
// reports false, changing nothing, when the node does not own id.
func (l *Ledger) Update(id string, fn func(e *Entry)) (Entry, bool) {
	l.mu.Lock()
	e, ok := l.entries[id]
	if !ok {
		l.mu.Unlock()
		return Entry{}, false
	}
	fn(&e)
	l.entries[id] = e
	l.changes++
	l.queue.push(metric(e))
	l.mu.Unlock()
	l.syncLogged()
	return e, true
}

// Remove forgets the entry of id, queues final as its last status and
// saves the ledger (a failed save is logged; the next one retries it). It
// reports false when the node does not own id.
func (l *Ledger) Remove(id string, final LastStatus) bool {
	l.mu.Lock()
	e, ok := l.entries[id]
	if !ok {
		l.mu.Unlock()
		return false
	}
	delete(l.entries, id)
	l.changes++
	e.Last = final
	l.queue.push(metric(e))
	l.mu.Unlock()
	l.syncLogged()
	return true
}

// Report queues the current status of id again, changing nothing; it
// reports false when the node does not own id.
func (l *Ledger) Report(id string) (Entry, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.entries[id]
	if ok {
		l.queue.push(metric(e))
	}
	return e, ok
}

// Progress queues the status of id with msg as its message while it is
// CREATING; progress is sent, not saved.
func (l *Ledger) Progress(id, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.entries[id]; ok && e.Last.Status == workload.StatusCreating {
		e.Last.Message = msg
		l.queue.push(metric(e))
	}
}

// Send queues a status of an instance the node does not own (a refused
// order, a destroy of an unknown instance).
func (l *Ledger) Send(id, workloadID string, last LastStatus) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.queue.push(metric(Entry{InstanceID: id, WorkloadID: workloadID, Last: last}))
}

// syncLogged saves the ledger, logging a failure.
func (l *Ledger) syncLogged() {
	if err := l.Sync(); err != nil {
		l.log.Error("saving ledger", "error", err)
	}
}

// Sync returns once every change made before the call is on disk. On an
// error the changes stay in memory and the next Sync writes them.
func (l *Ledger) Sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	want := l.changes
	for l.saved < want {
		if l.saving {
			l.saveDone.Wait()
			continue
		}
		l.saving = true
		upto := l.changes
		b, err := json.Marshal(File{Version: 1, Instances: l.listLocked()})
		l.mu.Unlock()
		if err == nil {
			err = atomicfile.Write(l.path, b, 0o600)
		}
		l.mu.Lock()
		l.saving = false
		l.saveDone.Broadcast()
		if err != nil {
			return err
		}
		l.saved = upto
	}
	return nil
}

// --- the statuses, as the scheduler session sends them

// Snapshot is the latest status of every owned instance, oldest first.
func (l *Ledger) Snapshot() []*commonpb.InstanceMetric {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.snapshotLocked()
}

func (l *Ledger) snapshotLocked() []*commonpb.InstanceMetric {
	var out []*commonpb.InstanceMetric
	for _, e := range l.listLocked() {
		out = append(out, metric(e))
	}
	return out
}

// Resend queues the latest status of every owned instance first (after a
// reconnect), dropping older queued statuses of those instances.
func (l *Ledger) Resend() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.queue.reset(l.snapshotLocked())
}

// Peek returns the first queued status, if any.
func (l *Ledger) Peek() (*commonpb.InstanceMetric, bool) { return l.queue.peek() }

// Pop removes the first queued status once sent, if it is still m.
func (l *Ledger) Pop(m *commonpb.InstanceMetric) { l.queue.pop(m) }

// Ready is signalled when a status is queued.
func (l *Ledger) Ready() <-chan struct{} { return l.queue.ready }

// --- wire form

func pbStatus(s workload.Status) commonpb.ResourceStatus {
	return commonpb.ResourceStatus(commonpb.ResourceStatus_value[string(s)])
}

func pbPorts(ports []workload.PortMapping) []*commonpb.PortMapping {
	var out []*commonpb.PortMapping
	for _, p := range ports {
		out = append(out, &commonpb.PortMapping{Port: uint32(p.Port), TargetPort: uint32(p.TargetPort), Protocol: p.Protocol})
	}
	return out
}

// metric is the wire status of an entry.
func metric(e Entry) *commonpb.InstanceMetric {
	m := &commonpb.InstanceMetric{
		Status:     pbStatus(e.Last.Status),
		InstanceId: e.InstanceID,
		Ip:         e.Last.IP,
		Ports:      pbPorts(e.Last.Ports),
		Reason:     e.Last.Reason,
		Message:    e.Last.Message,
		Restarts:   int32(e.Restarts),
		WorkloadId: e.WorkloadID,
		TimingsMs:  e.Last.Timings,
		Ready:      e.Last.Ready && e.Last.Status == workload.StatusRunning,
	}
	if e.Last.ExitCode != nil {
		m.HasExitCode = true
		m.ExitCode = int32(*e.Last.ExitCode)
	}
	return m
}
