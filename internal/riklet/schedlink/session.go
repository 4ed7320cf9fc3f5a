package schedlink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/workerpb"
	"github.com/rik-org/rik/internal/grpcutil"
	"github.com/rik-org/rik/internal/riklet/hostinfo"
)

// session is one registration: it receives orders until the stream breaks,
// while keeping a status stream and a log stream open.
func (l *Link) session(ctx context.Context, client workerpb.WorkerClient) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reg := l.registration()
	stream, err := client.Register(sctx, reg)
	if err != nil {
		return fmt.Errorf("registering: %w", err)
	}
	// The scheduler sends the headers once it recorded the node; statuses
	// sent before would be dropped.
	md, err := grpcutil.WaitHeaderMD(sctx, stream, l.cfg.ConnMax)
	if err != nil {
		return fmt.Errorf("registering: %w", err)
	}
	l.setHeartbeat(md.Get(grpcutil.HeartbeatHeader))
	l.log.Info("registered with scheduler", "kinds", reg.Kinds, "instances", len(reg.Instances))
	var wg sync.WaitGroup
	wg.Go(func() { l.statusLoop(sctx, client) })
	wg.Go(func() { l.logsLoop(sctx, client) })
	if l.cfg.Network != nil {
		wg.Go(func() { l.networkLoop(sctx, client) })
	}
	defer wg.Wait()
	defer cancel() // runs before wg.Wait
	for {
		o, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("receiving orders: scheduler closed the stream")
			}
			return fmt.Errorf("receiving orders: %w", err)
		}
		l.dispatch(o)
	}
}

// dispatch passes one order to the supervisor.
func (l *Link) dispatch(o *workerpb.InstanceScheduling) {
	switch o.GetAction() {
	case commonpb.WorkloadRequestKind_CREATE:
		l.sup.Create(o.GetInstanceId(), o.GetWorkloadId(), o.GetInstanceName(), []byte(o.GetDefinition()))
	case commonpb.WorkloadRequestKind_DESTROY:
		l.sup.Destroy(o.GetInstanceId(), o.GetWorkloadId())
	default:
		l.log.Warn("order with unknown action ignored", "instance", o.GetInstanceId(), "action", o.GetAction())
	}
}

// registration describes the node and what it runs now.
func (l *Link) registration() *commonpb.WorkerRegistration {
	s, err := l.host.Sample()
	if err != nil {
		l.log.Warn("reading node capacity", "error", err)
	}
	return &commonpb.WorkerRegistration{
		Hostname:  l.cfg.Hostname,
		Capacity:  s.Capacity,
		Labels:    l.cfg.Labels,
		Kinds:     l.sup.Kinds(),
		Instances: l.st.Snapshot(),
		Address:   l.address(),
		Version:   l.cfg.Version,
	}
}

// address is the node address registered.
func (l *Link) address() string {
	if l.cfg.Address != "" {
		return l.cfg.Address
	}
	return hostinfo.Address()
}

// heartbeat is the node's periodic metric.
func (l *Link) heartbeat() *commonpb.WorkerStatus {
	s, err := l.host.Sample()
	if err != nil {
		l.log.Debug("reading node usage", "error", err)
	}
	return &commonpb.WorkerStatus{
		Identifier: l.cfg.Hostname,
		Status: &commonpb.WorkerStatus_Worker{Worker: &commonpb.WorkerMetric{
			Status:   commonpb.ResourceStatus_RUNNING,
			Metrics:  hostinfo.RIKMetrics(s),
			Capacity: s.Capacity,
			Usage:    s.Usage,
			Load1:    s.Load1,
			Kinds:    l.sup.Kinds(),
		}},
	}
}

// setHeartbeat applies the longest heartbeat interval the scheduler allows
// (its registration header; none: the configured one stands).
func (l *Link) setHeartbeat(allowed []string) {
	every := l.cfg.HeartbeatInterval
	if len(allowed) > 0 {
		d, err := time.ParseDuration(allowed[0])
		switch {
		case err != nil || d <= 0:
			l.log.Warn("scheduler sent an invalid heartbeat interval: ignored", "value", allowed[0])
		case d < every:
			if time.Duration(l.heartbeatEvery.Load()) == d {
				every = d
				break // said so already
			}
			l.log.Warn("heartbeat interval too long for the scheduler's node timeout: using the scheduler's",
				"configured", every, "used", d)
			every = d
		}
	}
	l.heartbeatEvery.Store(int64(every))
}

// heartbeatInterval is how often heartbeats are sent.
func (l *Link) heartbeatInterval() time.Duration {
	if d := time.Duration(l.heartbeatEvery.Load()); d > 0 {
		return d
	}
	return l.cfg.HeartbeatInterval
}

// statusLoop keeps a status stream open until ctx is done.
func (l *Link) statusLoop(ctx context.Context, client workerpb.WorkerClient) {
	l.retryLoop(ctx, "status stream broken, reopening",
		func(ctx context.Context) error { return l.sendStatuses(ctx, client) }, nil)
}

// sendStatuses opens a status stream, re-sends the latest status of every
// instance, then sends queued statuses as they come and a heartbeat every
// heartbeat interval. A status leaves the queue once sent.
func (l *Link) sendStatuses(ctx context.Context, client workerpb.WorkerClient) error {
	st, err := client.SendStatusUpdates(ctx)
	if err != nil {
		return fmt.Errorf("opening status stream: %w", err)
	}
	fail := func(err error) error {
		if errors.Is(err, io.EOF) {
			if _, rerr := st.CloseAndRecv(); rerr != nil {
				err = rerr
			}
		}
		return fmt.Errorf("sending status: %w", err)
	}
	l.st.Resend()
	if err := st.Send(l.heartbeat()); err != nil {
		return fail(err)
	}
	tick := time.NewTicker(l.heartbeatInterval())
	defer tick.Stop()
	for {
		for {
			m, ok := l.st.Peek()
			if !ok {
				break
			}
			ws := &commonpb.WorkerStatus{Identifier: l.cfg.Hostname, Status: &commonpb.WorkerStatus_Instance{Instance: m}}
			if err := st.Send(ws); err != nil {
				return fail(err)
			}
			l.st.Pop(m)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-l.st.Ready():
		case <-tick.C:
			if err := st.Send(l.heartbeat()); err != nil {
				return fail(err)
			}
		}
	}
}
