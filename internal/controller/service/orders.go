package service

import (
	"context"
	"errors"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/errdefs"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/workload"
)

// MessageSchedulerDown is set on instances the scheduler did not take yet.
const MessageSchedulerDown = "scheduler unreachable, will retry"

// order builds the order for inst of wl.
func order(action Action, wl WorkloadRecord, inst workload.Instance, node string) Order {
	def := wl.Value
	return Order{
		Action:       action,
		WorkloadID:   inst.WorkloadID,
		Definition:   &def,
		InstanceID:   inst.ID,
		InstanceName: inst.Name,
		Node:         node,
		FormerNodes:  inst.FormerNodes,
	}
}

// destroyStub is the workload sent with a DESTROY when the workload record
// is already gone: only kind and name matter to the scheduler and node.
func destroyStub(inst workload.Instance) WorkloadRecord {
	return WorkloadRecord{ID: inst.WorkloadID, Name: inst.WorkloadName,
		Value: workload.Workload{Kind: inst.Kind, Name: inst.WorkloadName}}
}

// refused reports whether the scheduler refused an order for good: an
// invalid one, one it cannot take in any state, or one larger than it
// takes.
func refused(err error) bool {
	return errors.Is(err, errdefs.ErrInvalidArgument) || errors.Is(err, errdefs.ErrFailedPrecondition) ||
		errors.Is(err, errdefs.ErrResourceExhausted)
}

// sendCreate sends CREATE (with node as a hint, "" to place it). An order
// the scheduler refuses fails the instance (api.ReasonRejected); one that
// does not reach it leaves the instance PENDING with MessageSchedulerDown,
// sent again by the resync or on reconnect. It returns the instance as
// stored afterwards, and the error when the scheduler could not be reached.
func (s *Service) sendCreate(ctx context.Context, wl WorkloadRecord, inst workload.Instance, node string) (workload.Instance, error) {
	err := s.sched.Schedule(ctx, order(Create, s.revisionOf(ctx, wl, inst), inst, node))
	switch {
	case err == nil || errors.Is(err, errdefs.ErrAlreadyExists):
		return inst, nil
	case refused(err):
		s.log.Warn("scheduler rejected instance", "instance", inst.Name, "err", err)
		return s.failInstance(ctx, inst, err.Error()), nil
	}
	s.log.Warn("scheduler unreachable", "instance", inst.Name, "err", err)
	return s.mark(ctx, inst, "marking instance unscheduled", func(i *workload.Instance) bool {
		if i.Status != workload.StatusPending || i.Node != "" || i.DeleteRequested || i.Message == MessageSchedulerDown {
			return false
		}
		i.Message = MessageSchedulerDown
		return true
	}), err
}

// failInstance marks a live instance FAILED with api.ReasonRejected.
func (s *Service) failInstance(ctx context.Context, inst workload.Instance, msg string) workload.Instance {
	return s.mark(ctx, inst, "failing rejected instance", func(i *workload.Instance) bool {
		if i.DeleteRequested || i.Status.Terminal() {
			return false
		}
		i.Status, i.Reason, i.Message = workload.StatusFailed, api.ReasonRejected, msg
		return true
	})
}

// mark applies change to the stored inst (when it returns true, the record
// is written, its UpdatedAt set) and returns the instance as stored
// afterwards; inst as it was if that failed (logged as doing, unless the
// instance is gone).
func (s *Service) mark(ctx context.Context, inst workload.Instance, doing string, change func(*workload.Instance) bool) workload.Instance {
	rec, _, err := s.repo.updateInstance(ctx, inst.ID, func(i *workload.Instance) (store.Change, error) {
		if !change(i) {
			return store.Keep, nil
		}
		i.UpdatedAt = s.now()
		return store.Write, nil
	})
	if err != nil {
		if !errors.Is(err, errdefs.ErrNotFound) {
			s.log.Error(doing, "instance", inst.Name, "err", err)
		}
		return inst
	}
	return rec.Value
}

// sendDestroy sends DESTROY to the node inst is on; on failure the resync
// or reconnect sends it again.
func (s *Service) sendDestroy(ctx context.Context, wl WorkloadRecord, inst workload.Instance) error {
	err := s.sched.Schedule(ctx, order(Destroy, wl, inst, inst.Node))
	if err != nil {
		s.log.Warn("sending destroy, will retry", "instance", inst.Name, "err", err)
	}
	return err
}

// resend re-sends orders for the instances selected by want: DESTROY for
// those being deleted or whose workload is gone, CREATE (with their node as
// a hint) for the other live ones. It stops at the first order the
// scheduler does not receive: the next subscribe or resync sends everything
// again anyway.
func (s *Service) resend(ctx context.Context, want func(inst workload.Instance, workloadExists bool) bool) error {
	wlRecs, _, err := s.repo.listWorkloads(ctx)
	if err != nil {
		return err
	}
	wls := make(map[string]WorkloadRecord, len(wlRecs))
	for _, r := range wlRecs {
		wls[r.ID] = r
	}
	insts, _, err := s.repo.listInstances(ctx)
	if err != nil {
		return err
	}
	for _, rec := range insts {
		inst := rec.Value
		wl, ok := wls[inst.WorkloadID]
		if !want(inst, ok) {
			continue
		}
		var err error
		switch {
		case inst.DeleteRequested || !ok:
			if !ok {
				wl = destroyStub(inst)
			}
			err = s.sendDestroy(ctx, wl, inst)
		case !inst.Status.Terminal():
			_, err = s.sendCreate(ctx, wl, inst, inst.Node)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// resyncLoop periodically re-sends DESTROY for deletes still pending and for
// instances whose workload is gone (created while it was being deleted), and
// CREATE for instances the scheduler never took, while this controller
// holds the lease and the scheduler is connected.
func (s *Service) resyncLoop(ctx context.Context) {
	for sleep(ctx, s.cfg.ResyncEvery) {
		if !s.sched.Connected() || !s.leader.Held() {
			continue
		}
		err := s.resend(ctx, func(i workload.Instance, workloadExists bool) bool {
			return i.DeleteRequested || !workloadExists ||
				(i.Status == workload.StatusPending && i.Message == MessageSchedulerDown)
		})
		if err != nil && ctx.Err() == nil {
			s.log.Warn("periodic resync", "err", err)
		}
	}
}
