// Package grpcutil holds what the scheduler's clients (controllers and
// riklets) share on their gRPC connections.
package grpcutil

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// SchedulerKeepalive makes a client notice a dead scheduler host (no RST,
// just silence) within ~30s and connect again; the scheduler's enforcement
// policy allows these pings.
var SchedulerKeepalive = keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}

// WaitHeader waits for the response headers of stream, at most patience:
// a server that sends none (not rik's) is given up on after patience, and
// nil is returned. It returns the stream's error, or ctx's when ctx ends
// first.
func WaitHeader(ctx context.Context, stream grpc.ClientStream, patience time.Duration) error {
	done := make(chan error, 1)
	go func() { // ends with the stream at the latest
		_, err := stream.Header()
		done <- err
	}()
	t := time.NewTimer(patience)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
