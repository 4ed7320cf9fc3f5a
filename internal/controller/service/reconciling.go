package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/controller/reconcile"
	"github.com/rik-org/rik/internal/errdefs"
	"github.com/rik-org/rik/internal/workload"
)

// Cluster is the service as the reconciler sees it (reconcile.Cluster).
func (s *Service) Cluster() reconcile.Cluster { return cluster{s} }

// ReconcileKicks signals a change the reconciler should look at soon: a
// definition applied or scaled, an instance deleted. Instance statuses
// come through Subscribe.
func (s *Service) ReconcileKicks() <-chan struct{} { return s.reconcileKick }

func (s *Service) kickReconcile() {
	select {
	case s.reconcileKick <- struct{}{}:
	default:
	}
}

type cluster struct{ s *Service }

// snapshot is every managed workload with its records, as listed at once.
type snapshot struct {
	wl   WorkloadRecord
	m    managed
	inst []workload.Instance
}

// snapshots lists the managed workloads whose workload record exists.
func (s *Service) snapshots(ctx context.Context) ([]snapshot, error) {
	kvs, err := s.st.List(ctx, managedPrefix)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", managedPrefix, err)
	}
	if len(kvs) == 0 {
		return nil, nil
	}
	wls, _, err := s.repo.listWorkloads(ctx)
	if err != nil {
		return nil, err
	}
	wlByID := make(map[string]WorkloadRecord, len(wls))
	for _, wl := range wls {
		wlByID[wl.ID] = wl
	}
	byID := make(map[string]*snapshot, len(kvs))
	var out []*snapshot
	for _, kv := range kvs {
		var m managed
		if json.Unmarshal(kv.Value, &m) != nil {
			continue
		}
		if wl, ok := wlByID[m.WorkloadID]; ok {
			sn := &snapshot{wl: wl, m: m}
			byID[wl.ID] = sn
			out = append(out, sn)
		}
	}
	insts, _, err := s.repo.listInstances(ctx)
	if err != nil {
		return nil, err
	}
	for _, rec := range insts {
		if sn := byID[rec.Value.WorkloadID]; sn != nil {
			sn.inst = append(sn.inst, rec.Value)
		}
	}
	res := make([]snapshot, len(out))
	for i, sn := range out {
		res[i] = *sn
	}
	return res, nil
}

// plannerView is sn as the planner sees it.
func (sn snapshot) plannerView() reconcile.Workload {
	def := sn.m.Definition
	w := reconcile.Workload{ID: sn.wl.ID, Name: sn.wl.Name, Revision: sn.m.Revision, State: sn.m.Rollout,
		Policy: reconcile.Policy{Replicas: def.Replicas, MaxSurge: def.Update.Surge(), MaxUnavailable: def.Update.Unavailable(),
			MinReady: time.Duration(def.Update.MinReady()) * time.Second, Deadline: time.Duration(def.Update.ProgressDeadline()) * time.Second}}
	hashes := sn.m.hashes()
	current := hashes[sn.m.Revision]
	probed := map[int]bool{} // by revision: has a readiness probe
	for _, r := range sn.m.Revisions {
		probed[r.Revision.Revision] = r.Definition.HasReadiness()
	}
	for _, i := range sn.inst {
		h, ok := hashes[i.Revision]
		w.Instances = append(w.Instances, reconcile.Instance{
			ID: i.ID, Name: i.Name, Current: ok && h == current,
			Live:  !i.DeleteRequested && !i.Status.Terminal(),
			Ready: ready(i, probed), ReadySince: i.UpdatedAt,
			Ended: !i.DeleteRequested && i.Status.Terminal(), Failed: i.Status == workload.StatusFailed,
			Since: i.UpdatedAt, Status: string(i.Status), Reason: i.Reason, Message: i.Message, CreatedAt: i.CreatedAt,
		})
	}
	return w
}

// ready says whether the planner counts inst ready: the node says so
// (InstanceMetric.ready), or it is RUNNING and its revision has no
// readiness probe (a node that reports no readiness, as RIK's). Its
// UpdatedAt stands for when it became ready: a status change since can
// only make minReadySeconds count longer, never shorter.
func ready(inst workload.Instance, probed map[int]bool) bool {
	if inst.DeleteRequested {
		return false
	}
	return inst.Ready || (inst.Status == workload.StatusRunning && !probed[inst.Revision])
}

func (c cluster) Managed(ctx context.Context) ([]reconcile.Workload, error) {
	sns, err := c.s.snapshots(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]reconcile.Workload, len(sns))
	for i, sn := range sns {
		out[i] = sn.plannerView()
	}
	return out, nil
}

// current reads w's workload and managed records again; ok false when w is
// gone or at another revision since it was listed.
func (s *Service) current(ctx context.Context, w reconcile.Workload) (WorkloadRecord, managed, bool, error) {
	wl, _, err := s.repo.findWorkload(ctx, w.ID)
	if errors.Is(err, errdefs.ErrNotFound) {
		return wl, managed{}, false, nil
	}
	if err != nil {
		return wl, managed{}, false, err
	}
	m, ok, err := s.getManaged(ctx, wl)
	return wl, m, ok && m.Revision == w.Revision, err
}

// Create stores n PENDING instances of w's current revision and sends
// their CREATE orders with that revision's definition.
func (c cluster) Create(ctx context.Context, w reconcile.Workload, n int) error {
	s := c.s
	wl, m, ok, err := s.current(ctx, w)
	if err != nil || !ok {
		return err
	}
	wl.Value = m.Definition
	// As many as the caps leave room for: the rest in later passes, as
	// instances leave PENDING.
	n, capErr := s.admitUpTo(ctx, wl, n)
	if capErr != nil {
		capErr = fmt.Errorf("workload %s: %w", wl.Name, capErr)
	}
	if n == 0 {
		return capErr
	}
	var created []workload.Instance
	for range n {
		rec, err := s.newInstance(ctx, wl, nil, m.Revision)
		if err != nil {
			return err
		}
		created = append(created, rec.Value)
	}
	for _, inst := range created {
		_, _ = s.sendCreate(ctx, wl, inst, "") // failure is recorded on the instance
	}
	return capErr
}

// Delete deletes instances as instances.delete does.
func (c cluster) Delete(ctx context.Context, w reconcile.Workload, ids []string) error {
	var errs []error
	for _, id := range ids {
		if err := c.s.DeleteInstance(ctx, id); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Record stores the rollout state of w if w is still at that revision.
func (c cluster) Record(ctx context.Context, w reconcile.Workload, st reconcile.State) error {
	wl := WorkloadRecord{ID: w.ID, Name: w.Name}
	_, err := c.s.updateManaged(ctx, wl, func(m *managed, exists bool) (bool, error) {
		if !exists || m.Revision != w.Revision {
			return false, nil
		}
		m.Rollout = st
		return true, nil
	})
	return err
}

// rolloutOf is the state of a managed workload for the API: counts now,
// the rollout as last recorded.
func rolloutOf(sn snapshot, now time.Time) api.Rollout {
	w := sn.plannerView()
	p := reconcile.Decide(reconcile.Input{Policy: w.Policy, Instances: w.Instances, State: w.State, Now: now})
	st := sn.m.Rollout
	if st.Phase == "" {
		st.Phase = api.RolloutProgressing
	}
	return api.Rollout{Workload: sn.wl.Name, ID: sn.wl.ID, Revision: sn.m.Revision, Replicas: w.Policy.Replicas,
		Instances: p.Live, Ready: p.Ready, UpToDate: p.UpToDate, Available: p.Available,
		Phase: st.Phase, Reason: st.Reason, Message: st.Message, StartedAt: st.StartedAt, ProgressAt: st.ProgressAt}
}

// Rollout is the state of the managed workload ref names.
func (s *Service) Rollout(ctx context.Context, ref string) (api.Rollout, error) {
	wl, m, err := s.managedWorkload(ctx, ref)
	if err != nil {
		return api.Rollout{}, err
	}
	insts, err := s.instancesOf(ctx, wl.ID)
	if err != nil {
		return api.Rollout{}, err
	}
	sn := snapshot{wl: wl, m: m}
	for _, r := range insts {
		sn.inst = append(sn.inst, r.Value)
	}
	return rolloutOf(sn, s.now()), nil
}

// Rollouts is the state of every managed workload.
func (s *Service) Rollouts(ctx context.Context) ([]api.Rollout, error) {
	sns, err := s.snapshots(ctx)
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := make([]api.Rollout, len(sns))
	for i, sn := range sns {
		out[i] = rolloutOf(sn, now)
	}
	return out, nil
}

// FollowChanges calls kick after every change the reconciler should look
// at, whichever controller made it: an instance record changed, a managed
// workload applied, scaled or rolled back. It watches the store until ctx
// is done, watching again when a watch breaks.
func (s *Service) FollowChanges(ctx context.Context, kick func()) {
	for ctx.Err() == nil {
		if err := s.followOnce(ctx, kick); err != nil && ctx.Err() == nil {
			s.log.Warn("following changes for the reconciler, watching again", "err", err)
			sleep(ctx, backoffMin)
		}
	}
}

func (s *Service) followOnce(ctx context.Context, kick func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	insts, err := s.st.Watch(ctx, instancePrefix)
	if err != nil {
		return fmt.Errorf("watching %s: %w", instancePrefix, err)
	}
	mgd, err := s.st.Watch(ctx, managedPrefix)
	if err != nil {
		return fmt.Errorf("watching %s: %w", managedPrefix, err)
	}
	kick() // what changed before the watches started
	for {
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case <-s.reconcileKick:
			ok = true
		case _, ok = <-insts:
		case _, ok = <-mgd:
		}
		if !ok {
			return errors.New("watch channel closed")
		}
		kick()
	}
}
