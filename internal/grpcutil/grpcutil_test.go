package grpcutil

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// A dead scheduler host must be noticed within ~30s: a ping every Time,
// declared dead after Timeout without an answer, and pings even without
// streams (the scheduler permits them from 5s on).
func TestSchedulerKeepalive(t *testing.T) {
	k := SchedulerKeepalive
	if k.Time != 10*time.Second || k.Timeout != 5*time.Second || !k.PermitWithoutStream {
		t.Errorf("keepalive = %+v, want Time 10s, Timeout 5s, PermitWithoutStream", k)
	}
	if k.Time+k.Timeout > 30*time.Second {
		t.Errorf("dead scheduler noticed after %s, want at most 30s", k.Time+k.Timeout)
	}
}

// headerStream is a client stream whose Header returns err once release
// is closed.
type headerStream struct {
	grpc.ClientStream
	release chan struct{}
	err     error
}

func (s *headerStream) Header() (metadata.MD, error) {
	<-s.release
	return nil, s.err
}

func TestWaitHeader(t *testing.T) {
	errStream := errors.New("stream broken")
	closed := make(chan struct{})
	close(closed)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name     string
		ctx      context.Context
		stream   *headerStream
		patience time.Duration
		want     error
	}{
		{"headers", context.Background(), &headerStream{release: closed}, time.Minute, nil},
		{"stream error", context.Background(), &headerStream{release: closed, err: errStream}, time.Minute, errStream},
		{"no headers: given up on", context.Background(), &headerStream{release: make(chan struct{})}, 10 * time.Millisecond, nil},
		{"ctx done", cancelled, &headerStream{release: make(chan struct{})}, time.Minute, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				select {
				case <-tt.stream.release:
				default:
					close(tt.stream.release) // ends the waiting goroutine
				}
			}()
			if err := WaitHeader(tt.ctx, tt.stream, tt.patience); !errors.Is(err, tt.want) {
				t.Errorf("WaitHeader = %v, want %v", err, tt.want)
			}
		})
	}
}
