package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/internal/grpcutil"
	"github.com/rik-org/rik/internal/workload"
)

const (
	backoffMin = 200 * time.Millisecond
	backoffMax = 5 * time.Second
)

// link keeps the controller subscribed to the scheduler's status stream and
// sends it scheduling orders.
type link struct {
	s         *Server
	target    string
	conn      *grpc.ClientConn
	client    controllerpb.ControllerClient
	connected atomic.Bool

	mu        sync.Mutex
	endStream context.CancelFunc // ends the current status stream
	again     bool               // subscribe again at once (resubscribe)
}

// resubscribe ends the current status stream; run subscribes again at
// once, and the scheduler replays the last status of every instance.
func (l *link) resubscribe() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.again = true
	if l.endStream != nil {
		l.endStream()
	}
}

// takeAgain reports (and clears) a resubscribe request.
func (l *link) takeAgain() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	again := l.again
	l.again = false
	return again
}

func newLink(s *Server, target string) (*link, error) {
	creds := insecure.NewCredentials()
	if s.cfg.SchedulerTLS != nil {
		creds = credentials.NewTLS(s.cfg.SchedulerTLS)
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(grpcutil.SchedulerKeepalive))
	if err != nil {
		return nil, fmt.Errorf("scheduler client for %s: %w", target, err)
	}
	return &link{s: s, target: target, conn: conn, client: controllerpb.NewControllerClient(conn)}, nil
}

func (l *link) close() { _ = l.conn.Close() }

func (l *link) setConnected(v bool) {
	l.connected.Store(v)
	l.s.metrics.setSchedulerConnected(v)
}

// run subscribes to status updates until ctx is done, resubscribing with
// backoff, and re-sends the desired state after every (re)subscribe.
func (l *link) run(ctx context.Context) {
	wait := backoffMin
	for failures := 0; ctx.Err() == nil; failures++ {
		started := time.Now()
		err := l.subscribe(ctx)
		l.setConnected(false)
		if ctx.Err() != nil {
			return
		}
		if l.takeAgain() {
			l.s.log.Info("subscribing to the scheduler again", "scheduler", l.target)
			failures = -1
			continue
		}
		if time.Since(started) > 10*time.Second {
			wait, failures = backoffMin, 0 // it was up for a while: a new outage
		}
		level := slog.LevelWarn
		if failures > 0 {
			level = slog.LevelDebug // still down; said so already
		}
		l.s.log.Log(ctx, level, "scheduler status stream ended, retrying", "scheduler", l.target, "err", err, "in", wait)
		if !sleep(ctx, wait) {
			return
		}
		wait = min(wait*2, backoffMax)
	}
}

// subscribe opens one status stream, re-sends the desired state and ingests
// statuses until the stream breaks.
func (l *link) subscribe(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	l.mu.Lock()
	l.endStream = cancel
	l.again = false // this stream starts after any request
	l.mu.Unlock()
	stream, err := l.client.GetStatusUpdates(ctx, &emptypb.Empty{})
	if err != nil {
		return fmt.Errorf("subscribing to %s: %w", l.target, err)
	}
	// The call returns before the scheduler has subscribed us; it sends
	// headers once it has. Orders re-sent before that would have their
	// answering statuses lost.
	if err := grpcutil.WaitHeader(ctx, stream, headerPatience); err != nil {
		return fmt.Errorf("subscribing to %s: %w", l.target, err)
	}
	l.setConnected(true)
	l.s.log.Info("subscribed to scheduler", "scheduler", l.target)
	l.s.kickNodes()
	// Re-send while reading: the scheduler answers the orders on this
	// stream and drops a subscriber that does not keep up.
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() {
		if err := l.s.resendAll(ctx); err != nil && ctx.Err() == nil {
			l.s.log.Warn("re-sending desired state", "err", err)
		}
	})
	for {
		msg, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("receiving statuses from %s: %w", l.target, err)
		}
		if m := msg.GetInstance(); m != nil {
			l.s.ingest(ctx, m)
		}
	}
}

// headerPatience bounds the wait for a scheduler's subscription headers: one
// that sends none before its first status (not rik's) is not waited for.
const headerPatience = 5 * time.Second

// schedule sends one order, bounded by the call timeout.
func (l *link) schedule(ctx context.Context, order *controllerpb.WorkloadScheduling) error {
	ctx, cancel := context.WithTimeout(ctx, l.s.callTimeout)
	defer cancel()
	if _, err := l.client.ScheduleInstance(ctx, order); err != nil {
		return fmt.Errorf("scheduling %s %s: %w", order.GetAction(), order.GetInstanceName(), err)
	}
	return nil
}

// order builds a scheduling order for inst of wl.
func order(action commonpb.WorkloadRequestKind, wl workloadRecord, inst workload.Instance, node string) *controllerpb.WorkloadScheduling {
	def, _ := json.Marshal(wl.Value) // a decoded workload always encodes
	return &controllerpb.WorkloadScheduling{
		WorkloadId:   inst.WorkloadID,
		Definition:   string(def),
		Action:       action,
		InstanceId:   inst.ID,
		InstanceName: inst.Name,
		Node:         node,
		FormerNodes:  inst.FormerNodes,
	}
}

// api.ReasonRejected is set on an instance the scheduler refused to take.

// sendCreate sends CREATE; if the scheduler cannot be reached the instance
// stays PENDING with a message and is sent again on reconnect. An order the
// scheduler refuses as invalid fails the instance.
// It returns the instance as stored afterwards, and the error when the
// scheduler could not be reached.
func (s *Server) sendCreate(ctx context.Context, wl workloadRecord, inst workload.Instance, node string) (workload.Instance, error) {
	err := s.link.schedule(ctx, order(commonpb.WorkloadRequestKind_CREATE, wl, inst, node))
	if err == nil || status.Code(err) == codes.AlreadyExists {
		return inst, nil
	}
	// InvalidArgument, FailedPrecondition: refused; ResourceExhausted: an
	// order larger than the scheduler takes.
	if c := status.Code(err); c == codes.InvalidArgument || c == codes.FailedPrecondition || c == codes.ResourceExhausted {
		s.log.Warn("scheduler rejected instance", "instance", inst.Name, "err", err)
		return s.failInstance(ctx, inst, status.Convert(err).Message()), nil
	}
	s.log.Warn("scheduler unreachable", "instance", inst.Name, "err", err)
	rec, _, uerr := s.repo.updateInstance(ctx, inst.ID, func(i *workload.Instance) (change, error) {
		if i.Status != workload.StatusPending || i.Node != "" || i.DeleteRequested || i.Message == MessageSchedulerDown {
			return keep, nil
		}
		i.Message = MessageSchedulerDown
		i.UpdatedAt = s.now()
		return write, nil
	})
	if uerr != nil {
		if !errors.Is(uerr, ErrNotFound) {
			s.log.Error("marking instance unscheduled", "instance", inst.Name, "err", uerr)
		}
		return inst, err
	}
	return rec.Value, err
}

// failInstance marks a live instance FAILED with api.ReasonRejected.
func (s *Server) failInstance(ctx context.Context, inst workload.Instance, msg string) workload.Instance {
	rec, _, err := s.repo.updateInstance(ctx, inst.ID, func(i *workload.Instance) (change, error) {
		if i.DeleteRequested || i.Status.Terminal() {
			return keep, nil
		}
		i.Status = workload.StatusFailed
		i.Reason = api.ReasonRejected
		i.Message = msg
		i.UpdatedAt = s.now()
		return write, nil
	})
	if err != nil {
		if !errors.Is(err, ErrNotFound) {
			s.log.Error("failing rejected instance", "instance", inst.Name, "err", err)
		}
		return inst
	}
	return rec.Value
}

// sendDestroy sends DESTROY; on failure the resync or reconnect sends it again.
func (s *Server) sendDestroy(ctx context.Context, wl workloadRecord, inst workload.Instance) error {
	err := s.link.schedule(ctx, order(commonpb.WorkloadRequestKind_DESTROY, wl, inst, inst.Node))
	if err != nil {
		s.log.Warn("sending destroy, will retry", "instance", inst.Name, "err", err)
	}
	return err
}

// workloadsByID loads every workload, keyed by id.
func (s *Server) workloadsByID(ctx context.Context) (map[string]workloadRecord, error) {
	recs, _, err := listAll[workload.Workload](ctx, s.cfg.Store, workloadPrefix)
	if err != nil {
		return nil, err
	}
	m := make(map[string]workloadRecord, len(recs))
	for _, r := range recs {
		m[r.ID] = r
	}
	return m, nil
}

// destroyStub is the workload sent with a DESTROY when the workload record
// is already gone: only kind and name matter to the scheduler and node.
func destroyStub(inst workload.Instance) workloadRecord {
	return workloadRecord{ID: inst.WorkloadID, Name: inst.WorkloadName,
		Value: workload.Workload{Kind: inst.Kind, Name: inst.WorkloadName}}
}

// resendAll re-sends CREATE for every live instance (with its node as a
// hint) and DESTROY for every instance being deleted.
func (s *Server) resendAll(ctx context.Context) error {
	return s.resend(ctx, func(workload.Instance, bool) bool { return true })
}

// resend re-sends orders for the instances selected by want. It stops at
// the first order the scheduler does not receive: the next subscribe or
// resync sends everything again anyway.
func (s *Server) resend(ctx context.Context, want func(inst workload.Instance, workloadExists bool) bool) error {
	wls, err := s.workloadsByID(ctx)
	if err != nil {
		return err
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
// CREATE for instances the scheduler never took.
func (s *Server) resyncLoop(ctx context.Context) {
	for sleep(ctx, s.resyncEvery) {
		if !s.link.connected.Load() || !s.lease.held.Load() {
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

// ingest applies one instance status from the scheduler to the store, if
// this controller holds the lease.
func (s *Server) ingest(ctx context.Context, m *commonpb.InstanceMetric) {
	log := s.log.With("instance_id", m.GetInstanceId(), "status", m.GetStatus().String())
	if !s.lease.held.Load() {
		log.Debug("status left to the controller holding the lease")
		return
	}
	rec, _, err := s.repo.findInstanceByID(ctx, m.GetInstanceId())
	if errors.Is(err, ErrNotFound) {
		s.destroyOrphan(ctx, m)
		return
	}
	if err != nil {
		log.Error("reading instance for status", "err", err)
		return
	}
	wl, _, err := getByName[workload.Workload](ctx, s.cfg.Store, workloadKey, rec.Value.WorkloadName)
	exists := err == nil && wl.ID == rec.Value.WorkloadID
	if err != nil && !errors.Is(err, ErrNotFound) {
		log.Error("reading workload for status", "err", err)
		return
	}
	ac := applyContext{WorkloadExists: exists, Policy: wl.Value.RestartPolicy, Now: s.now()}
	var out outcome
	final, _, err := s.repo.updateInstance(ctx, rec.ID, func(i *workload.Instance) (change, error) {
		out = applyMetric(i, m, ac)
		switch out {
		case outcomeKeep, outcomeDestroy:
			return keep, nil
		case outcomeRemove:
			return remove, nil
		}
		return write, nil
	})
	if errors.Is(err, ErrNotFound) {
		return
	}
	if err != nil {
		log.Error("storing instance status", "err", err)
		return
	}
	if out != outcomeKeep {
		log.Debug("instance status stored", "outcome", int(out))
	}
	if out == outcomeDestroy {
		log.Info("destroying the copy of a lost instance its node still runs", "instance", final.Name, "node", m.GetNode())
		if err := s.link.schedule(ctx, order(commonpb.WorkloadRequestKind_DESTROY, wl, final.Value, m.GetNode())); err != nil {
			log.Warn("destroying the copy of a lost instance", "err", err) // the node reports it again
		}
	}
	if out == outcomeReschedule {
		log.Info("rescheduling instance after node loss", "instance", final.Name, "restarts", final.Value.Restarts)
		_, _ = s.sendCreate(ctx, wl, final.Value, "") // failure is recorded on the instance
	}
}

// orphanEvery bounds how often DESTROY is sent for one unknown instance.
const orphanEvery = time.Minute

// orphans remembers when DESTROY was last sent for instances nobody owns.
type orphans struct {
	mu   sync.Mutex
	sent map[string]time.Time
}

// due reports whether DESTROY for id may be sent at now, and records it.
func (o *orphans) due(id string, now time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.sent == nil {
		o.sent = map[string]time.Time{}
	}
	for k, at := range o.sent {
		if now.Sub(at) >= orphanEvery {
			delete(o.sent, k)
		}
	}
	if _, recent := o.sent[id]; recent {
		return false
	}
	o.sent[id] = now
	return true
}

// orphanAlive reports whether a status of an instance the store does not
// know means something runs or is about to, that nobody owns.
func orphanAlive(st commonpb.ResourceStatus) bool {
	switch st {
	case commonpb.ResourceStatus_PENDING, commonpb.ResourceStatus_CREATING, commonpb.ResourceStatus_RUNNING:
		return true
	}
	return false // UNKNOWN: ignored; FAILED, TERMINATED: over; DESTROYING: on its way
}

// destroyOrphan sends DESTROY for an instance the store does not know
// (deleted while its node was away, adopted by the scheduler after the store
// was reset, ...), at most once per orphanEvery per instance.
func (s *Server) destroyOrphan(ctx context.Context, m *commonpb.InstanceMetric) {
	id := m.GetInstanceId()
	if !orphanAlive(m.GetStatus()) || !s.orphans.due(id, s.now()) {
		s.log.Debug("status for unknown instance ignored", "instance_id", id, "status", m.GetStatus().String())
		return
	}
	s.log.Info("destroying instance unknown to the store", "instance_id", id, "status", m.GetStatus().String(), "node", m.GetNode())
	err := s.link.schedule(ctx, &controllerpb.WorkloadScheduling{
		InstanceId: id,
		WorkloadId: m.GetWorkloadId(),
		Action:     commonpb.WorkloadRequestKind_DESTROY,
		Node:       m.GetNode(),
	})
	if err != nil {
		s.log.Warn("destroying instance unknown to the store", "instance_id", id, "err", err)
	}
}

// instancesOf lists the instances of the workload with id.
func (s *Server) instancesOf(ctx context.Context, workloadID string) ([]instanceRecord, error) {
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
