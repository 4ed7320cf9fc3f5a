package service

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/controller/reconcile"
	"github.com/rik-org/rik/internal/errdefs"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/workload"
)

// Managed workloads (workloads.apply) have, besides their workload record,
// a record /managed/default/{name}: the current definition (the reconciler
// keeps its replicas), the revisions kept and the state of the rollout.
// Without one a workload is unmanaged (RIK's workloads.create).
const managedPrefix = "/managed/"

func managedKey(name string) string { return managedPrefix + namespace + "/" + name }

// MaxRevisions is how many revisions of a managed workload are kept.
const MaxRevisions = 20

// managed is the value of a managed record.
type managed struct {
	WorkloadID string            `json:"workloadId"`
	Revision   int               `json:"revision"`   // the current one
	Definition workload.Workload `json:"definition"` // current, with replicas and update
	Revisions  []revision        `json:"revisions"`  // oldest first; the last is the current one
	Rollout    reconcile.State   `json:"rollout"`
}

// revision is one kept revision; Hash identifies what it runs (the
// definition without replicas and update policy).
type revision struct {
	api.Revision[workload.Workload]
	Hash string `json:"hash"`
}

// templateHash identifies what instances of def run: replicas and the
// update policy are not part of it (scaling makes no revision).
func templateHash(def workload.Workload) string {
	def.Replicas, def.Update = 0, nil
	b, _ := json.Marshal(def) // a decoded workload always encodes
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// hashes maps the revisions kept to their hash.
func (m *managed) hashes() map[int]string {
	out := make(map[int]string, len(m.Revisions))
	for _, r := range m.Revisions {
		out[r.Revision.Revision] = r.Hash
	}
	return out
}

func (m *managed) revision(n int) (revision, bool) {
	for _, r := range m.Revisions {
		if r.Revision.Revision == n {
			return r, true
		}
	}
	return revision{}, false
}

// set makes def the current definition; a new revision (with cause) if
// what it runs changed. It reports whether anything changed, and whether
// a revision was made.
func (m *managed) set(def workload.Workload, cause string, now time.Time) (changed, revised bool) {
	h := templateHash(def)
	if cur, ok := m.revision(m.Revision); ok && cur.Hash == h {
		old, _ := json.Marshal(m.Definition)
		neu, _ := json.Marshal(def)
		m.Definition = def
		return string(old) != string(neu), false
	}
	m.Revision++
	m.Definition = def
	m.Revisions = append(m.Revisions, revision{Revision: api.Revision[workload.Workload]{
		Revision: m.Revision, CreatedAt: now, Cause: cause, Definition: def}, Hash: h})
	if len(m.Revisions) > MaxRevisions {
		m.Revisions = m.Revisions[len(m.Revisions)-MaxRevisions:]
	}
	m.Rollout = reconcile.State{Revision: m.Revision, Phase: api.RolloutProgressing, StartedAt: now, ProgressAt: now}
	return true, true
}

// getManaged reads the managed record of wl; ok false when wl is unmanaged.
func (s *Service) getManaged(ctx context.Context, wl WorkloadRecord) (managed, bool, error) {
	kv, err := s.st.Get(ctx, managedKey(wl.Name))
	if errors.Is(err, store.ErrNotFound) {
		return managed{}, false, nil
	}
	if err != nil {
		return managed{}, false, fmt.Errorf("reading %s: %w", managedKey(wl.Name), err)
	}
	var m managed
	if err := json.Unmarshal(kv.Value, &m); err != nil {
		return managed{}, false, fmt.Errorf("decoding %s: %w", kv.Key, err)
	}
	return m, m.WorkloadID == wl.ID, nil
}

// updateManaged applies fn to the managed record of wl (a fresh one when
// it has none, or one of a former workload of that name) with
// compare-and-set; fn returns false to write nothing.
func (s *Service) updateManaged(ctx context.Context, wl WorkloadRecord, fn func(m *managed, exists bool) (bool, error)) (managed, error) {
	var m managed
	_, _, err := store.Update(ctx, s.st, managedKey(wl.Name), func(cur store.KV, exists bool) ([]byte, store.Change, error) {
		m = managed{}
		if exists {
			if err := json.Unmarshal(cur.Value, &m); err != nil || m.WorkloadID != wl.ID {
				m, exists = managed{}, false
			}
		}
		if !exists {
			m.WorkloadID = wl.ID
		}
		write, err := fn(&m, exists)
		if err != nil || !write {
			return nil, store.Keep, err
		}
		data, err := json.Marshal(m)
		if err != nil {
			return nil, store.Keep, fmt.Errorf("encoding %s: %w", cur.Key, err)
		}
		return data, store.Write, nil
	})
	if err != nil {
		return managed{}, fmt.Errorf("updating workload %s: %w", wl.Name, err)
	}
	return m, nil
}

// dropManaged removes the managed record of wl, if any: the reconciler
// stops keeping its replicas.
func (s *Service) dropManaged(ctx context.Context, wl WorkloadRecord) error {
	_, _, err := store.Update(ctx, s.st, managedKey(wl.Name), func(cur store.KV, exists bool) ([]byte, store.Change, error) {
		var m managed
		if !exists || json.Unmarshal(cur.Value, &m) != nil || m.WorkloadID == wl.ID {
			return nil, store.Remove, nil
		}
		return nil, store.Keep, nil
	})
	if err != nil {
		return fmt.Errorf("deleting workload %s: %w", wl.Name, err)
	}
	return nil
}

// admitManaged parses and admits a definition for workloads.apply: its
// replicas must also fit the cluster's cap of instances.
func (s *Service) admitManaged(definition []byte) (workload.Workload, error) {
	def, err := workload.Parse(definition)
	if err == nil {
		def, err = workload.Admit(def, s.cfg.Admission.Policy)
	}
	if err != nil {
		return def, errdefs.Errorf(errdefs.ErrInvalidArgument, "%w", err)
	}
	if err := s.checkReplicas(def.Replicas); err != nil {
		return def, err
	}
	return def, nil
}

// checkReplicas refuses replicas above the cluster's cap of instances.
func (s *Service) checkReplicas(n int) error {
	if n < 0 || n > workload.MaxReplicas {
		return invalid("replicas", fmt.Sprintf("must be between 0 and %d", workload.MaxReplicas))
	}
	if max := s.cfg.Admission.MaxInstances; max > 0 && n > max {
		return invalid("replicas", fmt.Sprintf("must be at most %d (the cluster's cap of instances)", max))
	}
	return nil
}

// Apply creates or updates the workload a definition names and makes it
// managed: the reconciler keeps its replicas and rolls a changed
// definition out as a new revision. Applying the current definition again
// changes nothing. Applying over an unmanaged workload (workloads.create)
// adopts it: its instances are replaced under the update policy. A kind
// cannot change.
func (s *Service) Apply(ctx context.Context, definition []byte) (api.Applied[workload.Workload], error) {
	def, err := s.admitManaged(definition)
	if err != nil {
		return api.Applied[workload.Workload]{}, err
	}
	wl, created, err := s.ensureWorkload(ctx, def)
	if err != nil {
		return api.Applied[workload.Workload]{}, err
	}
	return s.applyTo(ctx, wl, def, "apply", created)
}

// applyTo makes def the current definition of the managed workload wl.
func (s *Service) applyTo(ctx context.Context, wl WorkloadRecord, def workload.Workload, cause string, created bool) (api.Applied[workload.Workload], error) {
	if wl.Value.Kind != def.Kind {
		return api.Applied[workload.Workload]{}, invalid("kind", fmt.Sprintf("workload %s is a %s: a kind cannot change (delete it first)", wl.Name, wl.Value.Kind))
	}
	var revised bool
	m, err := s.updateManaged(ctx, wl, func(m *managed, exists bool) (bool, error) {
		changed, rev := m.set(def, cause, s.now())
		revised = rev
		return changed || !exists, nil
	})
	if err != nil {
		return api.Applied[workload.Workload]{}, err
	}
	if wl, err = s.putDefinition(ctx, wl, m.Definition); err != nil {
		return api.Applied[workload.Workload]{}, err
	}
	s.kickReconcile()
	if revised {
		s.log.Info("workload applied", "workload", wl.Name, "revision", m.Revision, "cause", cause)
	}
	return api.Applied[workload.Workload]{Workload: wl, Revision: m.Revision, Created: created, Changed: revised}, nil
}

// ensureWorkload returns the workload def names, storing it when missing.
func (s *Service) ensureWorkload(ctx context.Context, def workload.Workload) (WorkloadRecord, bool, error) {
	for attempt := 0; ; attempt++ {
		wl, _, err := getByName[workload.Workload](ctx, s.st, workloadKey, def.Name)
		if err == nil || !errors.Is(err, errdefs.ErrNotFound) {
			return wl, false, err
		}
		rec := WorkloadRecord{ID: uuid.NewString(), Name: def.Name, Value: def}
		err = s.repo.createWorkload(ctx, rec)
		if errors.Is(err, errdefs.ErrAlreadyExists) && attempt < 3 {
			continue // created meanwhile: update it
		}
		return rec, err == nil, err
	}
}

// putDefinition stores def as the value of the workload record wl (what
// workloads.list shows and RIK's routes use).
func (s *Service) putDefinition(ctx context.Context, wl WorkloadRecord, def workload.Workload) (WorkloadRecord, error) {
	key := workloadKey(wl.Value.Kind, wl.Name)
	out := wl
	_, _, err := store.Update(ctx, s.st, key, func(cur store.KV, exists bool) ([]byte, store.Change, error) {
		if !exists {
			return nil, store.Keep, errdefs.Errorf(errdefs.ErrNotFound, "workload %q: deleted meanwhile", wl.Name)
		}
		rec, err := decode[workload.Workload](cur)
		if err != nil || rec.ID != wl.ID {
			return nil, store.Keep, errdefs.Errorf(errdefs.ErrNotFound, "workload %q: replaced meanwhile", wl.Name)
		}
		rec.Value = def
		out = rec
		data, err := json.Marshal(rec)
		if err != nil {
			return nil, store.Keep, fmt.Errorf("encoding %s: %w", key, err)
		}
		return data, store.Write, nil
	})
	if err != nil {
		return wl, fmt.Errorf("updating workload %s: %w", wl.Name, err)
	}
	return out, nil
}

// managedWorkload resolves ref to a managed workload and its record;
// ErrFailedPrecondition for an unmanaged one.
func (s *Service) managedWorkload(ctx context.Context, ref string) (WorkloadRecord, managed, error) {
	wl, _, err := s.repo.findWorkload(ctx, ref)
	if err != nil {
		return wl, managed{}, notFound("workload", ref, err)
	}
	m, ok, err := s.getManaged(ctx, wl)
	if err == nil && !ok {
		err = errdefs.Errorf(errdefs.ErrFailedPrecondition,
			"workload %q is unmanaged (made by workloads.create): apply it to have its replicas kept", wl.Name)
	}
	return wl, m, err
}

// Scale sets the replicas of a managed workload; the reconciler creates
// or removes instances. It answers the rollout's state.
func (s *Service) Scale(ctx context.Context, req api.ScaleRequest) (api.Rollout, error) {
	if req.ID == "" {
		return api.Rollout{}, invalid("id", "required")
	}
	if req.Replicas == nil {
		return api.Rollout{}, invalid("replicas", "required")
	}
	if err := s.checkReplicas(*req.Replicas); err != nil {
		return api.Rollout{}, err
	}
	wl, m, err := s.managedWorkload(ctx, req.ID)
	if err != nil {
		return api.Rollout{}, err
	}
	def := m.Definition
	def.Replicas = *req.Replicas
	if _, err := s.applyTo(ctx, wl, def, "scale", false); err != nil {
		return api.Rollout{}, err
	}
	s.log.Info("workload scaled", "workload", wl.Name, "replicas", def.Replicas)
	return s.Rollout(ctx, wl.ID)
}

// Undo rolls a managed workload back to the definition of an earlier
// revision (the one before the current when req.Revision is 0), as a new
// revision; its replicas and update policy stay as they are.
func (s *Service) Undo(ctx context.Context, req api.UndoRequest) (api.Applied[workload.Workload], error) {
	if req.ID == "" {
		return api.Applied[workload.Workload]{}, invalid("id", "required")
	}
	if req.Revision < 0 {
		return api.Applied[workload.Workload]{}, invalid("revision", "must be positive")
	}
	wl, m, err := s.managedWorkload(ctx, req.ID)
	if err != nil {
		return api.Applied[workload.Workload]{}, err
	}
	target, err := undoTarget(m, req.Revision)
	if err != nil {
		return api.Applied[workload.Workload]{}, err
	}
	def := target.Definition
	def.Replicas, def.Update = m.Definition.Replicas, m.Definition.Update
	if def, err = workload.Admit(def, s.cfg.Admission.Policy); err != nil {
		return api.Applied[workload.Workload]{}, errdefs.Errorf(errdefs.ErrInvalidArgument, "revision %d: %w", target.Revision.Revision, err)
	}
	return s.applyTo(ctx, wl, def, fmt.Sprintf("undo to revision %d", target.Revision.Revision), false)
}

// undoTarget is the revision to go back to: n, or the latest one before the
// current that runs something else.
func undoTarget(m managed, n int) (revision, error) {
	cur, _ := m.revision(m.Revision)
	if n == 0 {
		for i := len(m.Revisions) - 1; i >= 0; i-- {
			if r := m.Revisions[i]; r.Revision.Revision != m.Revision && r.Hash != cur.Hash {
				return r, nil
			}
		}
		return revision{}, errdefs.Errorf(errdefs.ErrFailedPrecondition, "no earlier revision to go back to")
	}
	r, ok := m.revision(n)
	if !ok {
		return revision{}, errdefs.Errorf(errdefs.ErrNotFound, "revision %d: not kept (the last %d are)", n, MaxRevisions)
	}
	if n == m.Revision {
		return revision{}, invalid("revision", fmt.Sprintf("%d is the current revision", n))
	}
	return r, nil
}

// History lists the revisions kept of a managed workload, oldest first.
func (s *Service) History(ctx context.Context, ref string) ([]api.Revision[workload.Workload], error) {
	_, m, err := s.managedWorkload(ctx, ref)
	if err != nil {
		return nil, err
	}
	out := make([]api.Revision[workload.Workload], len(m.Revisions))
	for i, r := range m.Revisions {
		out[i] = r.Revision
		out[i].Current = r.Revision.Revision == m.Revision
	}
	return out, nil
}

// revisionOf is wl with the definition inst runs: that of its revision
// for an instance of a managed workload (an old one during a rollout runs
// the old definition, and is re-sent or rescheduled with it), wl itself
// otherwise or when the revision is no longer kept.
func (s *Service) revisionOf(ctx context.Context, wl WorkloadRecord, inst workload.Instance) WorkloadRecord {
	if inst.Revision == 0 {
		return wl
	}
	m, ok, err := s.getManaged(ctx, wl)
	if err != nil || !ok {
		return wl
	}
	if r, ok := m.revision(inst.Revision); ok {
		wl.Value = r.Definition
	}
	return wl
}
