// Package grpcutil holds what the scheduler's clients (controllers and
// riklets) share on their gRPC connections.
package grpcutil

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
)

// SchedulerKeepalive makes a client notice a dead scheduler host (no RST,
// just silence) within ~30s and connect again; the scheduler's enforcement
// policy allows these pings.
var SchedulerKeepalive = keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}

// HeartbeatHeader is the registration header in which the scheduler tells
// a riklet the longest heartbeat interval its node timeout allows
// (a Go duration, e.g. "5s").
const HeartbeatHeader = "rik-heartbeat"

// EpochHeader is the header of a status stream in which the scheduler names
// its run: the sequence numbers of its statuses (WorkerStatus.seq) belong
// to it.
const EpochHeader = "rik-epoch"

// HeadHeader is the header of a status stream with the sequence number of
// the last status the scheduler had recorded when it subscribed the
// caller: what it replays ends there.
const HeadHeader = "rik-head"

// WaitHeader waits for the response headers of stream, at most patience:
// a server that sends none (not rik's) is given up on after patience, and
// nil is returned. It returns the stream's error, or ctx's when ctx ends
// first.
func WaitHeader(ctx context.Context, stream grpc.ClientStream, patience time.Duration) error {
	_, err := WaitHeaderMD(ctx, stream, patience)
	return err
}

// WaitHeaderMD is WaitHeader that also returns the headers (nil when none
// came within patience).
func WaitHeaderMD(ctx context.Context, stream grpc.ClientStream, patience time.Duration) (metadata.MD, error) {
	type result struct {
		md  metadata.MD
		err error
	}
	done := make(chan result, 1)
	go func() { // ends with the stream at the latest
		md, err := stream.Header()
		done <- result{md, err}
	}()
	t := time.NewTimer(patience)
	defer t.Stop()
	select {
	case r := <-done:
		return r.md, r.err
	case <-t.C:
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
