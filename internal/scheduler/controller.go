package scheduler

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/internal/workload"
)

// controllerAPI serves the controllers (controllerpb.Controller).
type controllerAPI struct {
	controllerpb.UnimplementedControllerServer
	st   *state
	stop <-chan struct{} // closed when the scheduler shuts down
}

// ScheduleInstance takes a CREATE or DESTROY order for one instance.
func (c *controllerAPI) ScheduleInstance(_ context.Context, ws *controllerpb.WorkloadScheduling) (*emptypb.Empty, error) {
	if err := workload.ValidInstanceID(ws.GetInstanceId()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	switch ws.GetAction() {
	case commonpb.WorkloadRequestKind_CREATE:
		req, err := parseRequest(ws.GetDefinition())
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		c.st.create(ws, req)
	case commonpb.WorkloadRequestKind_DESTROY:
		c.st.destroy(ws)
	default:
		return nil, status.Errorf(codes.InvalidArgument, "action: unknown value %d", ws.GetAction())
	}
	return &emptypb.Empty{}, nil
}

// GetStatusUpdates streams the last status of every instance, then every
// instance status as it comes, until the caller goes away or falls too far
// behind (then it is dropped and should subscribe again).
func (c *controllerAPI) GetStatusUpdates(_ *emptypb.Empty, stream grpc.ServerStreamingServer[commonpb.WorkerStatus]) error {
	sub := c.st.subscribe()
	defer c.st.unsubscribe(sub)
	// Headers tell the caller it is subscribed.
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return fmt.Errorf("accepting status subscriber: %w", err)
	}
	for _, ws := range sub.initial {
		if err := stream.Send(ws); err != nil {
			return err
		}
	}
	sub.initial = nil
	ctx := stream.Context()
	for {
		select {
		case <-sub.dropped.done():
			return status.Error(codes.ResourceExhausted, "status subscriber too slow: dropped, subscribe again")
		default:
		}
		select {
		case ws := <-sub.ch:
			if err := stream.Send(ws); err != nil {
				return err
			}
		case <-sub.dropped.done():
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-c.stop:
			return status.Error(codes.Unavailable, "scheduler shutting down")
		}
	}
}

// ListNodes describes the nodes the scheduler knows.
func (c *controllerAPI) ListNodes(context.Context, *emptypb.Empty) (*controllerpb.NodeList, error) {
	return c.st.listNodes(), nil
}

// GetLogs asks the node running the instance for its logs and streams the
// chunks back until the last one. A caller slower than the node, whose
// buffer fills up, gets ResourceExhausted and the node is told to stop.
func (c *controllerAPI) GetLogs(req *commonpb.LogRequest, stream grpc.ServerStreamingServer[commonpb.LogChunk]) error {
	if req.GetInstanceId() == "" {
		return status.Error(codes.InvalidArgument, "instance_id: required")
	}
	r, e := c.st.openLogs(req)
	switch e {
	case logsUnknownInstance:
		return status.Errorf(codes.NotFound, "instance %s: not running on any node", req.GetInstanceId())
	case logsNodeUnavailable:
		return status.Errorf(codes.Unavailable, "instance %s: its node's log stream is not connected", req.GetInstanceId())
	}
	ended := false // the node sent the last chunk
	defer func() { c.st.closeLogs(r, ended) }()
	ctx := stream.Context()
	send := func(chunk *commonpb.LogChunk) (bool, error) {
		ended = chunk.GetEof()
		chunk.RequestId = req.GetRequestId()
		if err := stream.Send(chunk); err != nil {
			return true, err
		}
		return ended, nil
	}
	tooSlow := status.Errorf(codes.ResourceExhausted, "instance %s: log reader too slow, request cancelled", req.GetInstanceId())
	for {
		select {
		case <-r.tooSlow.done(): // checked first: what is buffered is not sent
			return tooSlow
		default:
		}
		select {
		case <-r.tooSlow.done():
			return tooSlow
		case chunk := <-r.ch:
			if end, err := send(chunk); end || err != nil {
				return err
			}
		case <-r.conn.closed.done():
			for {
				select {
				case <-r.tooSlow.done():
					return tooSlow
				case chunk := <-r.ch:
					if end, err := send(chunk); end || err != nil {
						return err
					}
				default:
					return status.Errorf(codes.Unavailable, "log stream of node %s closed", r.conn.node)
				}
			}
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-c.stop:
			return status.Error(codes.Unavailable, "scheduler shutting down")
		}
	}
}
