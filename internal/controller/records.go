package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/workload"
)

// Domain errors, mapped to HTTP codes in the handlers only.
var (
	ErrNotFound  = errors.New("not found")
	ErrNameTaken = errors.New("name already taken")
	ErrBadInput  = errors.New("invalid request")
)

const (
	workloadPrefix = "/workload/"
	instancePrefix = "/instance/"
	namespace      = "default"
	casAttempts    = 16
)

// record is the stored envelope of a workload or an instance.
type record[T any] struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Value T      `json:"value"`
}

type workloadRecord = record[workload.Workload]
type instanceRecord = record[workload.Instance]

// segment is the key segment of kind k; an unknown kind falls back to pods.
func segment(k workload.Kind) string {
	if seg := k.KeySegment(); seg != "" {
		return seg
	}
	return "pods"
}

func workloadKey(k workload.Kind, name string) string {
	return workloadPrefix + segment(k) + "/" + namespace + "/" + name
}

func instanceKey(k workload.Kind, name string) string {
	return instancePrefix + segment(k) + "/" + namespace + "/" + name
}

// repo reads and writes workload and instance records. It keeps an in-memory
// index instance id -> key (ids and keys never change for a record), filled on
// writes and scans, so status updates do not scan the store.
type repo struct {
	st store.Store

	mu     sync.Mutex
	byID   map[string]string // instance id -> key
	wlByID map[string]string // workload id -> key
}

func newRepo(st store.Store) *repo {
	return &repo{st: st, byID: map[string]string{}, wlByID: map[string]string{}}
}

func decode[T any](kv store.KV) (record[T], error) {
	var r record[T]
	if err := json.Unmarshal(kv.Value, &r); err != nil {
		return r, fmt.Errorf("decoding %s: %w", kv.Key, err)
	}
	return r, nil
}

// getByName tries name under every kind prefix. Anything but a DNS label
// cannot be a name.
func getByName[T any](ctx context.Context, st store.Store, keyOf func(workload.Kind, string) string, name string) (record[T], store.KV, error) {
	if workload.ValidName(name) != nil {
		return record[T]{}, store.KV{}, ErrNotFound
	}
	for _, k := range []workload.Kind{workload.KindPod, workload.KindFunction} {
		kv, err := st.Get(ctx, keyOf(k, name))
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return record[T]{}, store.KV{}, fmt.Errorf("reading %s: %w", keyOf(k, name), err)
		}
		r, err := decode[T](kv)
		return r, kv, err
	}
	return record[T]{}, store.KV{}, ErrNotFound
}

// listAll returns every record under prefix with its KV.
func listAll[T any](ctx context.Context, st store.Store, prefix string) ([]record[T], []store.KV, error) {
	kvs, err := st.List(ctx, prefix)
	if err != nil {
		return nil, nil, fmt.Errorf("listing %s: %w", prefix, err)
	}
	recs := make([]record[T], 0, len(kvs))
	keep := kvs[:0:0]
	for _, kv := range kvs {
		r, err := decode[T](kv)
		if err != nil {
			continue // a corrupt record must not break listing
		}
		recs = append(recs, r)
		keep = append(keep, kv)
	}
	return recs, keep, nil
}

// findWorkload resolves a workload by name or id.
func (r *repo) findWorkload(ctx context.Context, ref string) (workloadRecord, store.KV, error) {
	rec, kv, err := getByName[workload.Workload](ctx, r.st, workloadKey, ref)
	if !errors.Is(err, ErrNotFound) {
		return rec, kv, err
	}
	r.mu.Lock()
	key, ok := r.wlByID[ref]
	r.mu.Unlock()
	if ok {
		kv, err := r.st.Get(ctx, key)
		if err == nil {
			if rec, err := decode[workload.Workload](kv); err == nil && rec.ID == ref {
				return rec, kv, nil
			}
		}
	}
	recs, kvs, err := listAll[workload.Workload](ctx, r.st, workloadPrefix)
	if err != nil {
		return workloadRecord{}, store.KV{}, err
	}
	// A full listing rebuilds the index, dropping workloads deleted since.
	index := make(map[string]string, len(recs))
	var found = -1
	for i, rec := range recs {
		index[rec.ID] = kvs[i].Key
		if rec.ID == ref {
			found = i
		}
	}
	r.mu.Lock()
	r.wlByID = index
	r.mu.Unlock()
	if found < 0 {
		return workloadRecord{}, store.KV{}, ErrNotFound
	}
	return recs[found], kvs[found], nil
}

// findInstance resolves an instance by name or id.
func (r *repo) findInstance(ctx context.Context, ref string) (instanceRecord, store.KV, error) {
	rec, kv, err := getByName[workload.Instance](ctx, r.st, instanceKey, ref)
	if !errors.Is(err, ErrNotFound) {
		return rec, kv, err
	}
	return r.findInstanceByID(ctx, ref)
}

// findInstanceByID resolves an instance by its UUID, using the index first.
func (r *repo) findInstanceByID(ctx context.Context, id string) (instanceRecord, store.KV, error) {
	r.mu.Lock()
	key, ok := r.byID[id]
	r.mu.Unlock()
	if ok {
		kv, err := r.st.Get(ctx, key)
		switch {
		case err == nil:
			if rec, err := decode[workload.Instance](kv); err == nil && rec.ID == id {
				return rec, kv, nil
			}
		case errors.Is(err, store.ErrNotFound):
			r.forget(id)
			return instanceRecord{}, store.KV{}, ErrNotFound
		default:
			return instanceRecord{}, store.KV{}, fmt.Errorf("reading %s: %w", key, err)
		}
	}
	recs, kvs, err := r.listInstances(ctx)
	if err != nil {
		return instanceRecord{}, store.KV{}, err
	}
	for i, rec := range recs {
		if rec.ID == id {
			return rec, kvs[i], nil
		}
	}
	return instanceRecord{}, store.KV{}, ErrNotFound
}

// listInstances lists every instance record and refreshes the id index.
func (r *repo) listInstances(ctx context.Context) ([]instanceRecord, []store.KV, error) {
	recs, kvs, err := listAll[workload.Instance](ctx, r.st, instancePrefix)
	if err != nil {
		return nil, nil, err
	}
	// A full listing rebuilds the index, dropping instances deleted since
	// (also by other controllers sharing the store).
	index := make(map[string]string, len(recs))
	for i, rec := range recs {
		index[rec.ID] = kvs[i].Key
	}
	r.mu.Lock()
	r.byID = index
	r.mu.Unlock()
	return recs, kvs, nil
}

func (r *repo) remember(id, key string) {
	r.mu.Lock()
	r.byID[id] = key
	r.mu.Unlock()
}

// forgetWorkload drops a deleted workload from the index.
func (r *repo) forgetWorkload(id string) {
	r.mu.Lock()
	delete(r.wlByID, id)
	r.mu.Unlock()
}

func (r *repo) forget(id string) {
	r.mu.Lock()
	delete(r.byID, id)
	r.mu.Unlock()
}

// nameTaken reports whether an instance (or workload, with keyOf) named name
// exists under any kind.
func (r *repo) nameTaken(ctx context.Context, keyOf func(workload.Kind, string) string, name string) (bool, error) {
	for _, k := range []workload.Kind{workload.KindPod, workload.KindFunction} {
		_, err := r.st.Get(ctx, keyOf(k, name))
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return false, fmt.Errorf("reading %s: %w", keyOf(k, name), err)
		}
	}
	return false, nil
}

// createWorkload stores a new workload record; ErrNameTaken if the name exists.
func (r *repo) createWorkload(ctx context.Context, rec workloadRecord) error {
	key, err := r.create(ctx, "workload", workloadKey, rec.Value.Kind, rec.Name, rec)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.wlByID[rec.ID] = key
	r.mu.Unlock()
	return nil
}

// createInstance stores a new instance record; ErrNameTaken if the name exists.
func (r *repo) createInstance(ctx context.Context, rec instanceRecord) error {
	key, err := r.create(ctx, "instance", instanceKey, rec.Value.Kind, rec.Name, rec)
	if err != nil {
		return err
	}
	r.remember(rec.ID, key)
	return nil
}

// create stores rec, a new record (what: workload or instance) named name
// of kind, under keyOf, and returns its key; ErrNameTaken if the name
// exists under any kind.
func (r *repo) create(ctx context.Context, what string, keyOf func(workload.Kind, string) string, kind workload.Kind, name string, rec any) (string, error) {
	taken, err := r.nameTaken(ctx, keyOf, name)
	if err != nil {
		return "", err
	}
	if taken {
		return "", fmt.Errorf("%s %q: %w", what, name, ErrNameTaken)
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return "", fmt.Errorf("encoding %s %s: %w", what, name, err)
	}
	key := keyOf(kind, name)
	if _, err := r.st.Put(ctx, key, data, 0); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return "", fmt.Errorf("%s %q: %w", what, name, ErrNameTaken)
		}
		return "", fmt.Errorf("writing %s: %w", key, err)
	}
	return key, nil
}

// casPause waits a random moment, growing exponentially with attempt (up to
// 10 ms), before retrying a compare-and-set that lost: without it, a writer
// can lose every attempt to one that keeps writing. False if ctx is done.
func casPause(ctx context.Context, attempt int) bool {
	ceiling := min(50*time.Microsecond<<min(attempt, 10), 10*time.Millisecond)
	return sleep(ctx, rand.N(ceiling)+time.Microsecond)
}

// change is what an update function decides for a record.
type change int

const (
	keep   change = iota // nothing to write
	write                // store the modified record
	remove               // delete the record
)

// updateInstance applies fn to the instance with id in a compare-and-set
// loop, so concurrent controllers do not lose updates. It returns the final
// record and what was done.
func (r *repo) updateInstance(ctx context.Context, id string, fn func(*workload.Instance) (change, error)) (instanceRecord, change, error) {
	for attempt := range casAttempts {
		if attempt > 0 && !casPause(ctx, attempt) {
			return instanceRecord{}, keep, fmt.Errorf("updating instance %s: %w", id, ctx.Err())
		}
		rec, kv, err := r.findInstanceByID(ctx, id)
		if err != nil {
			return rec, keep, err
		}
		c, err := fn(&rec.Value)
		if err != nil || c == keep {
			return rec, keep, err
		}
		if c == remove {
			err := r.st.Delete(ctx, kv.Key, kv.Revision)
			if errors.Is(err, store.ErrConflict) {
				continue
			}
			if errors.Is(err, store.ErrNotFound) {
				r.forget(id)
				return rec, keep, ErrNotFound
			}
			if err != nil {
				return rec, keep, fmt.Errorf("deleting %s: %w", kv.Key, err)
			}
			r.forget(id)
			return rec, remove, nil
		}
		data, err := json.Marshal(rec)
		if err != nil {
			return rec, keep, fmt.Errorf("encoding %s: %w", kv.Key, err)
		}
		_, err = r.st.Put(ctx, kv.Key, data, kv.Revision)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return rec, keep, fmt.Errorf("writing %s: %w", kv.Key, err)
		}
		return rec, write, nil
	}
	return instanceRecord{}, keep, fmt.Errorf("updating instance %s: %w", id, store.ErrConflict)
}
