package scheduler

import (
	"context"
	"fmt"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/internal/grpcutil"
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
// instance status as it comes, until the caller goes away. A slow caller
// gets the latest status of each instance (see subscriber).
func (c *controllerAPI) GetStatusUpdates(_ *emptypb.Empty, stream grpc.ServerStreamingServer[commonpb.WorkerStatus]) error {
	return c.streamStatuses(&controllerpb.StatusCursor{}, stream)
}

// SubscribeStatuses is GetStatusUpdates resumed at a cursor: of the same
// run, only the instances whose status changed after it are replayed.
func (c *controllerAPI) SubscribeStatuses(cur *controllerpb.StatusCursor, stream grpc.ServerStreamingServer[commonpb.WorkerStatus]) error {
	return c.streamStatuses(cur, stream)
}

func (c *controllerAPI) streamStatuses(cur *controllerpb.StatusCursor, stream grpc.ServerStreamingServer[commonpb.WorkerStatus]) error {
	sub, epoch, head := c.st.subscribe(cur.GetEpoch(), cur.GetSeq())
	defer c.st.unsubscribe(sub)
	// Headers tell the caller it is subscribed, to which run, and where
	// the replay ends.
	md := metadata.Pairs(grpcutil.EpochHeader, epoch, grpcutil.HeadHeader, strconv.FormatUint(head, 10))
	if err := stream.SendHeader(md); err != nil {
		return fmt.Errorf("accepting status subscriber: %w", err)
	}
	ctx := stream.Context()
	for {
		for ws, ok := sub.pop(); ok; ws, ok = sub.pop() {
			if err := stream.Send(ws); err != nil {
				return err
			}
		}
		select {
		case <-sub.wake:
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

// maxUnknownQuery bounds the ids of one UnknownInstances call.
const maxUnknownQuery = 20000

// UnknownInstances answers which of the given instances the scheduler does
// not have: a controller resuming its status stream sends CREATE for those.
func (c *controllerAPI) UnknownInstances(_ context.Context, in *controllerpb.InstanceIds) (*controllerpb.InstanceIds, error) {
	if len(in.GetIds()) > maxUnknownQuery {
		return nil, status.Errorf(codes.InvalidArgument, "ids: %d given, at most %d per call", len(in.GetIds()), maxUnknownQuery)
	}
	return &controllerpb.InstanceIds{Ids: c.st.unknown(in.GetIds())}, nil
}
