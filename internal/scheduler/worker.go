package scheduler

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/workerpb"
	"github.com/rik-org/rik/internal/grpcutil"
	"github.com/rik-org/rik/internal/pki"
)

// maxHostname bounds node names (a DNS name).
const maxHostname = 253

// workerAPI serves the riklets (workerpb.Worker).
type workerAPI struct {
	workerpb.UnimplementedWorkerServer
	st   *state
	sec  *security       // nil: plaintext, nobody is checked
	stop <-chan struct{} // closed when the scheduler shuts down
}

// node returns the node calling with ctx. Over TLS it must hold a node
// certificate; in plaintext it is the zero caller.
func (w *workerAPI) node(ctx context.Context) (caller, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return c, status.Error(codes.Unauthenticated, "a node certificate is required: join the cluster first")
	}
	if w.sec != nil && (!c.secure || c.role != pki.RoleNode) {
		return c, status.Error(codes.Unauthenticated, "a node certificate is required: join the cluster first")
	}
	return c, nil
}

// speakAs checks that caller c may use name: over TLS, only the name in
// its certificate.
func (c caller) speakAs(field, name string) error {
	if c.secure && name != c.name {
		return status.Errorf(codes.PermissionDenied, "%s %q: this node's certificate is for %q", field, name, c.name)
	}
	return nil
}

// grpcError maps the state's errors to gRPC statuses.
func grpcError(err error) error {
	switch {
	case errors.Is(err, errNameTaken):
		return status.Error(codes.AlreadyExists, "node name "+err.Error())
	case errors.Is(err, errNotOwner):
		return status.Error(codes.PermissionDenied, "node name "+err.Error())
	case errors.Is(err, errBadResources):
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return err
}

// Register records the node and streams orders to it until the stream ends,
// another Register for the same hostname (and key) replaces it, or the node
// is lost.
func (w *workerAPI) Register(reg *commonpb.WorkerRegistration, stream grpc.ServerStreamingServer[workerpb.InstanceScheduling]) error {
	who, err := w.node(stream.Context())
	if err != nil {
		return err
	}
	name := reg.GetHostname()
	if err := checkHostname(name); err != nil {
		return err
	}
	if err := who.speakAs("hostname", name); err != nil {
		return err
	}
	if err := checkResources("capacity", reg.GetCapacity()); err != nil {
		return grpcError(err)
	}
	c, err := w.st.register(reg, who.key)
	if err != nil {
		return grpcError(fmt.Errorf("%s: %w", name, err))
	}
	defer w.st.disconnect(name, c)
	// Headers tell the node its registration was recorded, and how often
	// it must send heartbeats.
	if err := stream.SendHeader(metadata.Pairs(grpcutil.HeartbeatHeader, heartbeatFor(w.st.nodeTimeout).String())); err != nil {
		return fmt.Errorf("accepting registration of %s: %w", name, err)
	}
	ctx := stream.Context()
	for {
		for _, o := range c.out.drain() {
			if err := stream.Send(o); err != nil {
				return fmt.Errorf("sending order for %s to %s: %w", o.GetInstanceId(), name, err)
			}
		}
		select {
		case <-c.out.ready:
		case <-c.kicked.done():
			return status.Error(codes.Aborted, "registration replaced or node declared lost: register again")
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-w.stop:
			return status.Error(codes.Unavailable, "scheduler shutting down")
		}
	}
}

// SendStatusUpdates takes heartbeats and instance statuses from a node.
func (w *workerAPI) SendStatusUpdates(stream grpc.ClientStreamingServer[commonpb.WorkerStatus, emptypb.Empty]) error {
	who, err := w.node(stream.Context())
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- w.receiveStatuses(stream, who) }()
	select {
	case err := <-errc:
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&emptypb.Empty{})
		}
		return err
	case <-w.stop:
		return status.Error(codes.Unavailable, "scheduler shutting down")
	}
}

func (w *workerAPI) receiveStatuses(stream grpc.ClientStreamingServer[commonpb.WorkerStatus, emptypb.Empty], who caller) error {
	for {
		ws, err := stream.Recv()
		if err != nil {
			return err
		}
		if err := w.status(ws, who); err != nil {
			return err
		}
	}
}

// status records one WorkerStatus sent by who.
func (w *workerAPI) status(ws *commonpb.WorkerStatus, who caller) error {
	name := ws.GetIdentifier()
	if err := who.speakAs("identifier", name); err != nil {
		return err
	}
	if name == "" {
		w.st.log.Debug("status without identifier dropped")
		return nil
	}
	var err error
	switch {
	case ws.GetWorker() != nil:
		if err = checkResources("capacity", ws.GetWorker().GetCapacity()); err == nil {
			err = w.st.heartbeat(name, who.key, ws.GetWorker())
		}
	case ws.GetInstance().GetInstanceId() != "":
		err = w.st.instanceStatus(name, who.key, ws.GetInstance())
	default:
		w.st.log.Debug("empty status dropped", "node", name)
	}
	if err != nil {
		return grpcError(fmt.Errorf("%s: %w", name, err))
	}
	return nil
}

// ServeLogs keeps the node's log stream: log requests go down, chunks come
// back and are routed to the GetLogs call that asked for them.
func (w *workerAPI) ServeLogs(stream grpc.BidiStreamingServer[commonpb.LogChunk, commonpb.LogRequest]) error {
	who, err := w.node(stream.Context())
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	name := first.GetRequestId()
	if err := checkHostname(name); err != nil {
		return err
	}
	if err := who.speakAs("request_id", name); err != nil {
		return err
	}
	c := &logConn{node: name, key: who.key, out: newQueue[*commonpb.LogRequest](), closed: newCloser()}
	if err := w.st.attachLogs(c); err != nil {
		return grpcError(fmt.Errorf("%s: %w", name, err))
	}
	defer w.st.detachLogs(c)
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return fmt.Errorf("accepting log stream of %s: %w", name, err)
	}
	ctx := stream.Context()
	go func() { // ends with the stream, which ends when ServeLogs returns
		defer c.closed.close()
		for {
			chunk, err := stream.Recv()
			if err != nil {
				return
			}
			w.st.deliverLog(c, chunk) // never blocks on a caller
		}
	}()
	for {
		for _, req := range c.out.drain() {
			if err := stream.Send(req); err != nil {
				return fmt.Errorf("sending log request to %s: %w", name, err)
			}
		}
		select {
		case <-c.out.ready:
		case <-c.closed.done():
			return nil
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-w.stop:
			return status.Error(codes.Unavailable, "scheduler shutting down")
		}
	}
}

// Bounds of the capacity a node may claim: 2^24 millicores (16777
// CPUs) and 2^30 MiB (1 PiB). A claim beyond is refused, not clamped: a
// clamped lie would still attract every workload.
const (
	maxCPUMillis = 1 << 24
	maxMemoryMiB = 1 << 30
)

// errBadResources: a node claimed an impossible capacity.
var errBadResources = errors.New("impossible capacity")

// checkResources checks resources a node claims (nil: none claimed).
func checkResources(field string, r *commonpb.Resources) error {
	switch {
	case r.GetCpuMillis() < 0 || r.GetCpuMillis() > maxCPUMillis:
		return fmt.Errorf("%w: %s.cpu_millis: %d is not in 0..%d", errBadResources, field, r.GetCpuMillis(), maxCPUMillis)
	case r.GetMemoryMib() < 0 || r.GetMemoryMib() > maxMemoryMiB:
		return fmt.Errorf("%w: %s.memory_mib: %d is not in 0..%d", errBadResources, field, r.GetMemoryMib(), maxMemoryMiB)
	}
	return nil
}

func checkHostname(name string) error {
	switch {
	case name == "":
		return status.Error(codes.InvalidArgument, "hostname: required")
	case len(name) > maxHostname:
		return status.Errorf(codes.InvalidArgument, "hostname: longer than %d characters", maxHostname)
	}
	return nil
}
