package service

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/errdefs"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/workload"
)

// ListInstances returns every instance.
func (s *Service) ListInstances(ctx context.Context) ([]InstanceRecord, error) {
	recs, _, err := s.repo.listInstances(ctx)
	return recs, err
}

// GetInstance returns the instance ref names (its name or id).
func (s *Service) GetInstance(ctx context.Context, ref string) (InstanceRecord, error) {
	rec, _, err := s.repo.findInstance(ctx, ref)
	return rec, notFound("instance", ref, err)
}

// invalid is an ErrInvalidArgument naming the field of the request.
func invalid(field, msg string) error {
	return errdefs.Errorf(errdefs.ErrInvalidArgument, "%s: %s", field, msg)
}

// checkCreate validates an instances.create request and returns the
// replica count.
func checkCreate(req api.CreateInstancesRequest) (int, error) {
	if req.WorkloadID == "" {
		return 0, invalid("workload_id", "required")
	}
	n := 1
	if req.Replicas != nil {
		n = *req.Replicas
	}
	if n < 1 || n > workload.MaxReplicas {
		return 0, invalid("replicas", fmt.Sprintf("must be between 1 and %d", workload.MaxReplicas))
	}
	if req.Name != nil {
		if n > 1 {
			return 0, invalid("name", "cannot be set when replicas > 1")
		}
		if err := workload.ValidName(*req.Name); err != nil {
			return 0, invalid("name", "must be a DNS label (lowercase a-z0-9 and '-', at most 63 chars)")
		}
	}
	return n, nil
}

// CreateInstances creates the PENDING instances req asks for and sends
// their CREATE orders. The workload's definition is admitted again and the
// quotas are checked first (ErrResourceExhausted past a cap). The orders go
// out even if ctx is cancelled once the instances are stored; an order the
// scheduler did not take is recorded on its instance (sent again later).
// If some replicas could not be stored, those stored are returned.
func (s *Service) CreateInstances(ctx context.Context, req api.CreateInstancesRequest) ([]InstanceRecord, error) {
	n, err := checkCreate(req)
	if err != nil {
		return nil, err
	}
	wl, _, err := s.repo.findWorkload(ctx, req.WorkloadID)
	if err != nil {
		return nil, notFound("workload", req.WorkloadID, err)
	}
	if _, managed, err := s.getManaged(ctx, wl); err != nil || managed {
		if err == nil {
			err = errdefs.Errorf(errdefs.ErrFailedPrecondition,
				"workload %q is managed (workloads.apply): its instances are kept by the controller; change its replicas with workloads.scale", wl.Name)
		}
		return nil, err
	}
	if err := s.admitInstances(ctx, wl, n); err != nil {
		return nil, err
	}
	created := make([]InstanceRecord, 0, n)
	for range n {
		rec, err := s.newInstance(ctx, wl, req.Name, 0)
		if err != nil {
			if len(created) == 0 {
				return nil, err
			}
			s.log.Error("creating replica", "workload", wl.Name, "err", err)
			break
		}
		created = append(created, rec)
	}
	// Each call is bounded by the scheduler's call timeout.
	sendCtx := context.WithoutCancel(ctx)
	for i, rec := range created {
		created[i].Value, _ = s.sendCreate(sendCtx, wl, rec.Value, "") // failure is recorded on the instance
	}
	return created, nil
}

// newInstance stores a PENDING instance of wl, named name or generated, of
// a revision (0: unmanaged).
func (s *Service) newInstance(ctx context.Context, wl WorkloadRecord, name *string, revision int) (InstanceRecord, error) {
	now := s.now()
	for attempt := 0; ; attempt++ {
		n := ""
		if name != nil {
			n = *name
		} else {
			n = instanceName(wl.Name)
		}
		inst := workload.Instance{
			ID: uuid.NewString(), Name: n, WorkloadID: wl.ID, WorkloadName: wl.Name,
			Kind: wl.Value.Kind, Status: workload.StatusPending, Revision: revision, CreatedAt: now, UpdatedAt: now,
		}
		rec := InstanceRecord{ID: inst.ID, Name: n, Value: inst}
		err := s.repo.createInstance(ctx, rec)
		if errors.Is(err, errdefs.ErrAlreadyExists) && name == nil && attempt < 5 {
			continue
		}
		return rec, err
	}
}

const nameAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// instanceName is "<workload>-<5 random [a-z0-9]>", a DNS label.
func instanceName(workloadName string) string {
	prefix := workloadName
	if len(prefix) > 57 {
		prefix = prefix[:57]
	}
	for len(prefix) > 0 && prefix[len(prefix)-1] == '-' {
		prefix = prefix[:len(prefix)-1]
	}
	var b [5]byte
	_, _ = rand.Read(b[:])
	suffix := make([]byte, 5)
	for i, c := range b {
		suffix[i] = nameAlphabet[int(c)%len(nameAlphabet)]
	}
	if prefix == "" {
		return "i-" + string(suffix)
	}
	return prefix + "-" + string(suffix)
}

// DeleteInstance asks for the instance ref names to be destroyed: it is
// marked and listed DESTROYING until its node confirms, or removed at once
// if it already ended. Once the record is marked (or removed), DESTROY
// goes out even if ctx is cancelled: a removed record is not re-sent by
// the resync.
func (s *Service) DeleteInstance(ctx context.Context, ref string) error {
	ctx = context.WithoutCancel(ctx)
	rec, _, err := s.repo.findInstance(ctx, ref)
	if err != nil {
		return notFound("instance", ref, err)
	}
	final, destroy, err := s.markDeleted(ctx, rec.ID)
	if err != nil {
		return notFound("instance", ref, err)
	}
	s.Record(ctx, api.EventKindInstance, final.Name, api.EventDeleting, "asked for")
	if destroy {
		wl, ok, err := s.workloadOf(ctx, final.Value)
		if err != nil || !ok {
			wl = destroyStub(final.Value)
		}
		_ = s.sendDestroy(ctx, wl, final.Value) // retried by the resync
	}
	if final.Value.Revision > 0 {
		s.kickReconcile() // a managed instance: replaced
	}
	return nil
}

// markDeleted sets deleteRequested and DESTROYING on an instance, or removes
// it right away if it already terminated. It reports whether DESTROY must be
// sent (also when it was already being deleted: asking again re-sends it,
// and for a terminated instance that was placed: its node keeps what is
// left of it, e.g. a completed pod, until told to destroy it).
func (s *Service) markDeleted(ctx context.Context, id string) (InstanceRecord, bool, error) {
	now := s.now()
	rec, c, err := s.repo.updateInstance(ctx, id, func(i *workload.Instance) (store.Change, error) {
		switch {
		case i.Status == workload.StatusTerminated:
			return store.Remove, nil
		case i.DeleteRequested && i.Status == workload.StatusDestroying:
			return store.Keep, nil
		}
		i.DeleteRequested = true
		i.Status = workload.StatusDestroying
		i.Ready = false
		i.UpdatedAt = now
		return store.Write, nil
	})
	if err != nil {
		return rec, false, err
	}
	if c == store.Remove {
		return rec, rec.Value.Node != "", nil
	}
	return rec, rec.Value.DeleteRequested, nil
}
