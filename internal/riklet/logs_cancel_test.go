package riklet

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/rik-org/rik/api/proto/commonpb"
	rt "github.com/rik-org/rik/internal/riklet/runtime"
)

// followRuntime is the fake runtime whose Logs, when following, writes one
// line then blocks until its context ends, and records which requests'
// contexts were cancelled.
type followRuntime struct {
	rt.Runtime
	mu        sync.Mutex
	following map[string]chan struct{} // by first line written; closed on ctx done
}

func (f *followRuntime) Logs(ctx context.Context, inst rt.Instance, opts rt.LogOptions, w io.Writer) error {
	if !opts.Follow {
		return f.Runtime.Logs(ctx, inst, opts, w)
	}
	ended := make(chan struct{})
	f.mu.Lock()
	f.following[opts.Container] = ended
	f.mu.Unlock()
	if _, err := w.Write([]byte("following " + opts.Container + "\n")); err != nil {
		return err
	}
	<-ctx.Done()
	close(ended)
	return ctx.Err()
}

func (f *followRuntime) ended(container string) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.following[container]
}

func TestLogsCancel(t *testing.T) {
	sched := startScheduler(t, "127.0.0.1:0")
	cfg, pods := testConfig(t, sched, t.TempDir())
	fr := &followRuntime{following: map[string]chan struct{}{}}
	cfg.Runtimes = []RuntimeFactory{func(ctx context.Context, report rt.Reporter) (rt.Runtime, error) {
		r, err := pods.New(ctx, report)
		fr.Runtime = r
		return fr, err
	}}
	startNode(t, cfg, pods)
	waitReady(t, sched, 1)
	sched.create("l1", podDef("web", "Always"))
	sched.waitStatus(t, "l1", is(commonpb.ResourceStatus_RUNNING))

	// Two follow requests (the container name tells them apart).
	sched.logReqs <- &commonpb.LogRequest{RequestId: "f1", InstanceId: "l1", Container: "a", Follow: true}
	sched.logReqs <- &commonpb.LogRequest{RequestId: "f2", InstanceId: "l1", Container: "b", Follow: true}
	chunkOf := func(rid string, eof bool) func() bool {
		return func() bool {
			sched.mu.Lock()
			defer sched.mu.Unlock()
			for _, c := range sched.chunks {
				if c.GetRequestId() == rid && c.GetEof() == eof {
					return true
				}
			}
			return false
		}
	}
	eventually(t, chunkOf("f1", false), func() string { return "first chunk of f1" })
	eventually(t, chunkOf("f2", false), func() string { return "first chunk of f2" })

	// Cancelling f1 (and an unknown request) ends f1's Logs only.
	sched.logReqs <- &commonpb.LogRequest{RequestId: "nope", Cancel: true}
	sched.logReqs <- &commonpb.LogRequest{RequestId: "f1", Cancel: true}
	select {
	case <-fr.ended("a"):
	case <-time.After(waitFor):
		t.Fatal("Logs of the cancelled request still running")
	}
	select {
	case <-fr.ended("b"):
		t.Fatal("Logs of the other request was cancelled too")
	case <-time.After(100 * time.Millisecond):
	}
	// The node still serves requests.
	sched.logReqs <- &commonpb.LogRequest{RequestId: "r3", InstanceId: "l1"}
	eventually(t, chunkOf("r3", true), func() string { return "eof of r3" })
}
