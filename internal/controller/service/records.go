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
	st        store.Store
	instances index
	workloads index
}

func newRepo(st store.Store) *repo { return &repo{st: st} }

// index maps the ids of records to their keys.
type index struct {
	mu   sync.Mutex
	keys map[string]string
}

func (x *index) get(id string) (string, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	key, ok := x.keys[id]
	return key, ok
}

func (x *index) set(id, key string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.keys == nil {
		x.keys = map[string]string{}
	}
	x.keys[id] = key
}

func (x *index) drop(id string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	delete(x.keys, id)
}

func (x *index) len() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.keys)
}

// rebuild replaces the index with the records of a full listing, dropping
// those deleted since (also by other controllers).
func rebuild[T any](x *index, recs []api.Item[T], kvs []store.KV) {
	m := make(map[string]string, len(recs))
	for i, rec := range recs {
		m[rec.ID] = kvs[i].Key
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.keys = m
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

// listAll returns every record under prefix with its KV, and rebuilds x
// from them.
func listAll[T any](ctx context.Context, st store.Store, prefix string, x *index) ([]api.Item[T], []store.KV, error) {
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
	if x != nil {
		rebuild(x, recs, keep)
	}
	return recs, keep, nil
}

// listWorkloads lists every workload record and rebuilds the id index.
func (r *repo) listWorkloads(ctx context.Context) ([]WorkloadRecord, []store.KV, error) {
	return listAll[workload.Workload](ctx, r.st, workloadPrefix, &r.workloads)
}

// listInstances lists every instance record and rebuilds the id index.
func (r *repo) listInstances(ctx context.Context) ([]InstanceRecord, []store.KV, error) {
	return listAll[workload.Instance](ctx, r.st, instancePrefix, &r.instances)
}

// find resolves a record by id: at the key x holds for it, else through a
// full listing under prefix.
func find[T any](ctx context.Context, st store.Store, prefix string, x *index, id string) (api.Item[T], store.KV, error) {
	if key, ok := x.get(id); ok {
		kv, err := st.Get(ctx, key)
		switch {
		case errors.Is(err, store.ErrNotFound):
			x.drop(id)
		case err != nil:
			return api.Item[T]{}, kv, fmt.Errorf("reading %s: %w", key, err)
		default:
			if rec, err := decode[T](kv); err == nil && rec.ID == id {
				return rec, kv, nil
			}
		}
	}
	recs, kvs, err := listAll[T](ctx, st, prefix, x)
	if err != nil {
		return api.Item[T]{}, store.KV{}, err
	}
	for i, rec := range recs {
		if rec.ID == id {
			return rec, kvs[i], nil
		}
	}
	return api.Item[T]{}, store.KV{}, errdefs.ErrNotFound
}

// findWorkload resolves a workload by name or id.
func (r *repo) findWorkload(ctx context.Context, ref string) (WorkloadRecord, store.KV, error) {
	rec, kv, err := getByName[workload.Workload](ctx, r.st, workloadKey, ref)
	if !errors.Is(err, errdefs.ErrNotFound) {
		return rec, kv, err
	}
	return find[workload.Workload](ctx, r.st, workloadPrefix, &r.workloads, ref)
}

// findInstance resolves an instance by name or id.
func (r *repo) findInstance(ctx context.Context, ref string) (InstanceRecord, store.KV, error) {
	rec, kv, err := getByName[workload.Instance](ctx, r.st, instanceKey, ref)
	if !errors.Is(err, errdefs.ErrNotFound) {
		return rec, kv, err
	}
	return r.findInstanceByID(ctx, ref)
}

// findInstanceByID resolves an instance by its id.
func (r *repo) findInstanceByID(ctx context.Context, id string) (InstanceRecord, store.KV, error) {
	return find[workload.Instance](ctx, r.st, instancePrefix, &r.instances, id)
}

// createWorkload stores a new workload record; ErrAlreadyExists if the
// name is taken under any kind.
func (r *repo) createWorkload(ctx context.Context, rec WorkloadRecord) error {
	return create(ctx, r.st, "workload", workloadKey, &r.workloads, rec.Value.Kind, rec)
}

// createInstance stores a new instance record; ErrAlreadyExists if the
// name is taken under any kind.
func (r *repo) createInstance(ctx context.Context, rec InstanceRecord) error {
	return create(ctx, r.st, "instance", instanceKey, &r.instances, rec.Value.Kind, rec)
}

// create stores rec, a new record (what: workload or instance) of kind,
// under keyOf, and indexes it in x; ErrAlreadyExists if its name exists
// under any kind.
func create[T any](ctx context.Context, st store.Store, what string, keyOf func(workload.Kind, string) string, x *index, kind workload.Kind, rec api.Item[T]) error {
	taken := errdefs.Errorf(errdefs.ErrAlreadyExists, "%s %q: name already taken", what, rec.Name)
	for _, k := range kinds {
		_, err := st.Get(ctx, keyOf(k, rec.Name))
		if err == nil {
			return taken
		}
		if !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("reading %s: %w", keyOf(k, rec.Name), err)
		}
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encoding %s %s: %w", what, rec.Name, err)
	}
	key := keyOf(kind, rec.Name)
	if _, err := st.Put(ctx, key, data, 0); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return taken
		}
		return fmt.Errorf("writing %s: %w", key, err)
	}
	x.set(rec.ID, key)
	return nil
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
		r.instances.drop(id)
	}
	if err != nil {
		return rec, store.Keep, fmt.Errorf("updating instance %s: %w", id, err)
	}
	return rec, c, nil
}
