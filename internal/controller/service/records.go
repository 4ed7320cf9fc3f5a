package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/errdefs"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/workload"
)

// Records are stored as the API shows them, RIK's {id, name, value}.
type (
	WorkloadRecord = api.Item[workload.Workload]
	InstanceRecord = api.Item[workload.Instance]
	NodeRecord     = api.Item[api.Node]
)

// The store layout (RIK's): /workload/{pods|function}/default/{name},
// /instance/{pods|function}/default/{name}, /node/{name}.
const (
	workloadPrefix = "/workload/"
	instancePrefix = "/instance/"
	nodePrefix     = "/node/"
	namespace      = "default"
)

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

func nodeKey(name string) string { return nodePrefix + name }

// kinds are the kinds a name is looked up under.
var kinds = []workload.Kind{workload.KindPod, workload.KindFunction}

// repo reads and writes workload and instance records. It keeps in-memory
// indexes id -> key (ids and keys never change for a record), filled on
// writes and scans, so that lookups by id (every status update) do not scan
// the store. Missing records are errdefs.ErrNotFound, bare: callers say
// what was missing.
type repo struct {
	st store.Store

	mu     sync.Mutex
	byID   map[string]string // instance id -> key
	wlByID map[string]string // workload id -> key
}

func newRepo(st store.Store) *repo {
	return &repo{st: st, byID: map[string]string{}, wlByID: map[string]string{}}
}

func decode[T any](kv store.KV) (api.Item[T], error) {
	var r api.Item[T]
	if err := json.Unmarshal(kv.Value, &r); err != nil {
		return r, fmt.Errorf("decoding %s: %w", kv.Key, err)
	}
	return r, nil
}

// getByName tries name under every kind's key. Anything but a DNS label
// cannot be a name.
func getByName[T any](ctx context.Context, st store.Store, keyOf func(workload.Kind, string) string, name string) (api.Item[T], store.KV, error) {
	if workload.ValidName(name) != nil {
		return api.Item[T]{}, store.KV{}, errdefs.ErrNotFound
	}
	for _, k := range kinds {
		kv, err := st.Get(ctx, keyOf(k, name))
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return api.Item[T]{}, store.KV{}, fmt.Errorf("reading %s: %w", keyOf(k, name), err)
		}
		r, err := decode[T](kv)
		return r, kv, err
	}
	return api.Item[T]{}, store.KV{}, errdefs.ErrNotFound
}

// listAll returns every record under prefix with its KV.
func listAll[T any](ctx context.Context, st store.Store, prefix string) ([]api.Item[T], []store.KV, error) {
	kvs, err := st.List(ctx, prefix)
	if err != nil {
		return nil, nil, fmt.Errorf("listing %s: %w", prefix, err)
	}
	recs := make([]api.Item[T], 0, len(kvs))
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

// index maps the id of every record to its key.
func index[T any](recs []api.Item[T], kvs []store.KV) map[string]string {
	m := make(map[string]string, len(recs))
	for i, rec := range recs {
		m[rec.ID] = kvs[i].Key
	}
	return m
}

// listWorkloads lists every workload record and rebuilds the id index,
// dropping workloads deleted since (also by other controllers).
func (r *repo) listWorkloads(ctx context.Context) ([]WorkloadRecord, []store.KV, error) {
	recs, kvs, err := listAll[workload.Workload](ctx, r.st, workloadPrefix)
	if err != nil {
		return nil, nil, err
	}
	idx := index(recs, kvs)
	r.mu.Lock()
	r.wlByID = idx
	r.mu.Unlock()
	return recs, kvs, nil
}

// listInstances lists every instance record and rebuilds the id index.
func (r *repo) listInstances(ctx context.Context) ([]InstanceRecord, []store.KV, error) {
	recs, kvs, err := listAll[workload.Instance](ctx, r.st, instancePrefix)
	if err != nil {
		return nil, nil, err
	}
	idx := index(recs, kvs)
	r.mu.Lock()
	r.byID = idx
	r.mu.Unlock()
	return recs, kvs, nil
}

// byIndex reads the record of id at the key its index holds; ok is false
// when the index does not know id or the key holds another record.
func byIndex[T any](ctx context.Context, r *repo, idx map[string]string, id string) (rec api.Item[T], kv store.KV, ok bool, err error) {
	r.mu.Lock()
	key, known := idx[id]
	r.mu.Unlock()
	if !known {
		return rec, kv, false, nil
	}
	kv, err = r.st.Get(ctx, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		r.mu.Lock()
		delete(idx, id)
		r.mu.Unlock()
		return rec, kv, false, nil
	case err != nil:
		return rec, kv, false, fmt.Errorf("reading %s: %w", key, err)
	}
	rec, err = decode[T](kv)
	return rec, kv, err == nil && rec.ID == id, nil
}

// findWorkload resolves a workload by name or id.
func (r *repo) findWorkload(ctx context.Context, ref string) (WorkloadRecord, store.KV, error) {
	rec, kv, err := getByName[workload.Workload](ctx, r.st, workloadKey, ref)
	if !errors.Is(err, errdefs.ErrNotFound) {
		return rec, kv, err
	}
	if rec, kv, ok, err := byIndex[workload.Workload](ctx, r, r.wlByID, ref); ok || err != nil {
		return rec, kv, err
	}
	recs, kvs, err := r.listWorkloads(ctx)
	if err != nil {
		return WorkloadRecord{}, store.KV{}, err
	}
	for i, rec := range recs {
		if rec.ID == ref {
			return rec, kvs[i], nil
		}
	}
	return WorkloadRecord{}, store.KV{}, errdefs.ErrNotFound
}

// findInstance resolves an instance by name or id.
func (r *repo) findInstance(ctx context.Context, ref string) (InstanceRecord, store.KV, error) {
	rec, kv, err := getByName[workload.Instance](ctx, r.st, instanceKey, ref)
	if !errors.Is(err, errdefs.ErrNotFound) {
		return rec, kv, err
	}
	return r.findInstanceByID(ctx, ref)
}

// findInstanceByID resolves an instance by its id, using the index first.
func (r *repo) findInstanceByID(ctx context.Context, id string) (InstanceRecord, store.KV, error) {
	if rec, kv, ok, err := byIndex[workload.Instance](ctx, r, r.byID, id); ok || err != nil {
		return rec, kv, err
	}
	recs, kvs, err := r.listInstances(ctx)
	if err != nil {
		return InstanceRecord{}, store.KV{}, err
	}
	for i, rec := range recs {
		if rec.ID == id {
			return rec, kvs[i], nil
		}
	}
	return InstanceRecord{}, store.KV{}, errdefs.ErrNotFound
}

// forgetWorkload drops a deleted workload from the index.
func (r *repo) forgetWorkload(id string) {
	r.mu.Lock()
	delete(r.wlByID, id)
	r.mu.Unlock()
}

// createWorkload stores a new workload record; ErrAlreadyExists if the
// name is taken under any kind.
func (r *repo) createWorkload(ctx context.Context, rec WorkloadRecord) error {
	key, err := create(ctx, r.st, "workload", workloadKey, rec.Value.Kind, rec)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.wlByID[rec.ID] = key
	r.mu.Unlock()
	return nil
}

// createInstance stores a new instance record; ErrAlreadyExists if the
// name is taken under any kind.
func (r *repo) createInstance(ctx context.Context, rec InstanceRecord) error {
	key, err := create(ctx, r.st, "instance", instanceKey, rec.Value.Kind, rec)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.byID[rec.ID] = key
	r.mu.Unlock()
	return nil
}

// create stores rec, a new record (what: workload or instance) of kind,
// under keyOf, and returns its key; ErrAlreadyExists if its name exists
// under any kind.
func create[T any](ctx context.Context, st store.Store, what string, keyOf func(workload.Kind, string) string, kind workload.Kind, rec api.Item[T]) (string, error) {
	taken := errdefs.Errorf(errdefs.ErrAlreadyExists, "%s %q: name already taken", what, rec.Name)
	for _, k := range kinds {
		_, err := st.Get(ctx, keyOf(k, rec.Name))
		if err == nil {
			return "", taken
		}
		if !errors.Is(err, store.ErrNotFound) {
			return "", fmt.Errorf("reading %s: %w", keyOf(k, rec.Name), err)
		}
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return "", fmt.Errorf("encoding %s %s: %w", what, rec.Name, err)
	}
	key := keyOf(kind, rec.Name)
	if _, err := st.Put(ctx, key, data, 0); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return "", taken
		}
		return "", fmt.Errorf("writing %s: %w", key, err)
	}
	return key, nil
}

// updateInstance applies fn to the instance with id in a compare-and-set
// loop (store.Update), so concurrent controllers do not lose updates. It
// returns the final record and what was done: Write stored the modified
// record, Remove deleted it.
func (r *repo) updateInstance(ctx context.Context, id string, fn func(*workload.Instance) (store.Change, error)) (InstanceRecord, store.Change, error) {
	_, kv, err := r.findInstanceByID(ctx, id)
	if err != nil {
		return InstanceRecord{}, store.Keep, err
	}
	var rec InstanceRecord
	_, c, err := store.Update(ctx, r.st, kv.Key, func(cur store.KV, exists bool) ([]byte, store.Change, error) {
		if !exists {
			return nil, store.Keep, errdefs.ErrNotFound
		}
		var err error
		if rec, err = decode[workload.Instance](cur); err != nil || rec.ID != id {
			return nil, store.Keep, errdefs.ErrNotFound // replaced by another record of that name
		}
		c, err := fn(&rec.Value)
		if err != nil || c != store.Write {
			return nil, c, err
		}
		data, err := json.Marshal(rec)
		if err != nil {
			return nil, store.Keep, fmt.Errorf("encoding %s: %w", cur.Key, err)
		}
		return data, store.Write, nil
	})
	if errors.Is(err, errdefs.ErrNotFound) || c == store.Remove {
		r.mu.Lock()
		delete(r.byID, id)
		r.mu.Unlock()
	}
	if err != nil {
		return rec, store.Keep, fmt.Errorf("updating instance %s: %w", id, err)
	}
	return rec, c, nil
}
