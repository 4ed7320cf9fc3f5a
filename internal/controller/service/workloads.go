package service

import (
	"context"
	"errors"
	"fmt"
	"github.com/rik-org/rik/api"

	"github.com/google/uuid"

	"github.com/rik-org/rik/internal/errdefs"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/workload"
)

// notFound names ref in a not-found error (what: workload, instance).
func notFound(what, ref string, err error) error {
	if errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("%s %q: %w", what, ref, errdefs.ErrNotFound)
	}
	return err
}

// ListWorkloads returns every workload.
func (s *Service) ListWorkloads(ctx context.Context) ([]WorkloadRecord, error) {
	recs, _, err := s.repo.listWorkloads(ctx)
	return recs, err
}

// CreateWorkload parses a definition sent by a user, applies the admission
// policy and stores what it admitted under a new id. A bad definition is
// ErrInvalidArgument (the message lists the fields), a name taken
// ErrAlreadyExists.
func (s *Service) CreateWorkload(ctx context.Context, definition []byte) (WorkloadRecord, error) {
	def, err := workload.Parse(definition)
	if err == nil {
		def, err = workload.Admit(def, s.cfg.Admission.Policy)
	}
	if err != nil {
		return WorkloadRecord{}, errdefs.Errorf(errdefs.ErrInvalidArgument, "%w", err)
	}
	rec := WorkloadRecord{ID: uuid.NewString(), Name: def.Name, Value: def}
	if err := s.repo.createWorkload(ctx, rec); err != nil {
		return WorkloadRecord{}, err
	}
	s.Record(ctx, api.EventKindWorkload, rec.Name, api.EventCreated, string(def.Kind))
	return rec, nil
}

// WorkloadInstances returns the instances of the workload ref names (its
// name or id).
func (s *Service) WorkloadInstances(ctx context.Context, ref string) ([]InstanceRecord, error) {
	wl, _, err := s.repo.findWorkload(ctx, ref)
	if err != nil {
		return nil, notFound("workload", ref, err)
	}
	return s.instancesOf(ctx, wl.ID)
}

// instancesOf lists the instances of the workload with id.
func (s *Service) instancesOf(ctx context.Context, workloadID string) ([]InstanceRecord, error) {
	recs, _, err := s.repo.listInstances(ctx)
	if err != nil {
		return nil, err
	}
	out := recs[:0]
	for _, r := range recs {
		if r.Value.WorkloadID == workloadID {
			out = append(out, r)
		}
	}
	return out, nil
}

// DeleteWorkload marks every instance of the workload ref names for
// deletion, sends DESTROY for them and removes the workload record at
// once. Once started it runs to the end even if ctx is cancelled:
// stopping half way would leave some instances destroyed and the others
// running.
func (s *Service) DeleteWorkload(ctx context.Context, ref string) error {
	ctx = context.WithoutCancel(ctx)
	wl, kv, err := s.repo.findWorkload(ctx, ref)
	if err != nil {
		return notFound("workload", ref, err)
	}
	// Unmanaged first: the reconciler must not replace what goes away.
	if err := s.dropManaged(ctx, wl); err != nil {
		return err
	}
	insts, err := s.instancesOf(ctx, wl.ID)
	if err != nil {
		return err
	}
	var toDestroy []workload.Instance
	for _, inst := range insts {
		final, destroy, err := s.markDeleted(ctx, inst.ID)
		if errors.Is(err, errdefs.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if destroy {
			toDestroy = append(toDestroy, final.Value)
		}
	}
	if err := s.st.Delete(ctx, kv.Key, kv.Revision); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("deleting workload %s: %w", wl.Name, err)
	}
	s.repo.workloads.drop(wl.ID)
	s.forgetEvents(api.EventKindWorkload, wl.Name)
	s.log.Info("workload deleted", "workload", wl.Name, "instances", len(insts))
	for _, inst := range toDestroy {
		_ = s.sendDestroy(ctx, wl, inst) // retried by the resync
	}
	return nil
}

// workloadOf returns the workload of inst, or ok false when it is gone (or
// replaced by another of the same name).
func (s *Service) workloadOf(ctx context.Context, inst workload.Instance) (WorkloadRecord, bool, error) {
	wl, _, err := getByName[workload.Workload](ctx, s.st, workloadKey, inst.WorkloadName)
	if errors.Is(err, errdefs.ErrNotFound) {
		return WorkloadRecord{}, false, nil
	}
	if err != nil {
		return WorkloadRecord{}, false, err
	}
	return wl, wl.ID == inst.WorkloadID, nil
}
