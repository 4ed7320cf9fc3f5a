package riklet

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

	"github.com/rik-org/rik/internal/atomicfile"
	"github.com/rik-org/rik/internal/workload"
)

// LastStatus is the last status the agent reported for an instance.
type LastStatus struct {
	Status   workload.Status        `json:"status"`
	IP       string                 `json:"ip,omitempty"`
	Ports    []workload.PortMapping `json:"ports,omitempty"`
	Reason   string                 `json:"reason,omitempty"`
	Message  string                 `json:"message,omitempty"`
	ExitCode *int                   `json:"exitCode,omitempty"`
	Timings  map[string]int64       `json:"timings_ms,omitempty"`
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

// ledgerFile is the on-disk shape of the ledger.
type ledgerFile struct {
	Version   int     `json:"version"`
	Instances []Entry `json:"instances"`
}

// Ledger is the node's record of the instances it owns, kept in one JSON
// file written atomically. It is safe for concurrent use. Set and Remove
// change it in memory; Sync makes every change made so far durable, one
// write serving all the callers waiting meanwhile (group commit).
type Ledger struct {
	path string

	mu       sync.Mutex
	entries  map[string]Entry
	changes  uint64 // changes made
	saved    uint64 // changes on disk
	saving   bool
	saveDone *sync.Cond
}

// OpenLedger loads the ledger at path (a missing file is an empty ledger). A
// file that cannot be decoded is moved aside to path.corrupt-<unix> and an
// empty ledger is returned.
func OpenLedger(path string, log *slog.Logger) (*Ledger, error) {
	l := &Ledger{path: path, entries: map[string]Entry{}}
	l.saveDone = sync.NewCond(&l.mu)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading ledger %s: %w", path, err)
	}
	var f ledgerFile
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

// Set adds or replaces an entry in memory; Sync saves it.
func (l *Ledger) Set(e Entry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries[e.InstanceID] = e
	l.changes++
}

// Remove removes an entry in memory; Sync saves it.
func (l *Ledger) Remove(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.entries[id]; ok {
		delete(l.entries, id)
		l.changes++
	}
}

// Put sets an entry and saves the ledger.
func (l *Ledger) Put(e Entry) error {
	l.Set(e)
	return l.Sync()
}

// Delete removes an entry and saves the ledger.
func (l *Ledger) Delete(id string) error {
	l.Remove(id)
	return l.Sync()
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
		b, err := json.Marshal(ledgerFile{Version: 1, Instances: l.listLocked()})
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
