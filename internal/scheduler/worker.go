package scheduler

import (
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
)

// maxHostname bounds node names (a DNS name).
const maxHostname = 253

// workerAPI serves the riklets (workerpb.Worker).
type workerAPI struct {
	workerpb.UnimplementedWorkerServer
	st   *state
	stop <-chan struct{} // closed when the scheduler shuts down
}

// Register records the node and streams orders to it until the stream ends,
// another Register for the same hostname replaces it, or the node is lost.
func (w *workerAPI) Register(reg *commonpb.WorkerRegistration, stream grpc.ServerStreamingServer[workerpb.InstanceScheduling]) error {
	name := reg.GetHostname()
	if err := checkHostname(name); err != nil {
		return err
	}
	c := w.st.register(reg)
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
	errc := make(chan error, 1)
	go func() { errc <- w.receiveStatuses(stream) }()
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

func (w *workerAPI) receiveStatuses(stream grpc.ClientStreamingServer[commonpb.WorkerStatus, emptypb.Empty]) error {
	for {
		ws, err := stream.Recv()
		if err != nil {
			return err
		}
		name := ws.GetIdentifier()
		if name == "" {
			w.st.log.Debug("status without identifier dropped")
			continue
		}
		switch {
		case ws.GetWorker() != nil:
			w.st.heartbeat(name, ws.GetWorker())
		case ws.GetInstance().GetInstanceId() != "":
			w.st.instanceStatus(name, ws.GetInstance())
		default:
			w.st.log.Debug("empty status dropped", "node", name)
		}
	}
}

// ServeLogs keeps the node's log stream: log requests go down, chunks come
// back and are routed to the GetLogs call that asked for them.
func (w *workerAPI) ServeLogs(stream grpc.BidiStreamingServer[commonpb.LogChunk, commonpb.LogRequest]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	name := first.GetRequestId()
	if err := checkHostname(name); err != nil {
		return err
	}
	c := &logConn{node: name, out: newQueue[*commonpb.LogRequest](), closed: newCloser()}
	w.st.attachLogs(c)
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

func checkHostname(name string) error {
	switch {
	case name == "":
		return status.Error(codes.InvalidArgument, "hostname: required")
	case len(name) > maxHostname:
		return status.Errorf(codes.InvalidArgument, "hostname: longer than %d characters", maxHostname)
	}
	return nil
}
