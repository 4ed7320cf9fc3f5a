package schedlink

import (
	"bytes"
	"context"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/riklet/schedlink/schedlinktest"
)

func TestLogs(t *testing.T) {
	n := setup(t)
	if _, err := n.sup.rt.Start(context.Background(), runtime.Instance{ID: "l1", Name: "name-l1"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return slices.Equal(n.sched.LogHellos(), []string{"node-1"}) },
		func() string { return "log stream hello" })

	n.sched.RequestLogs(&commonpb.LogRequest{RequestId: "r1", InstanceId: "l1"})
	n.sched.RequestLogs(&commonpb.LogRequest{RequestId: "r2", InstanceId: "nope"})
	n.sched.RequestLogs(&commonpb.LogRequest{RequestId: "r3", InstanceId: "l1", Tail: 1})
	n.sched.RequestLogs(&commonpb.LogRequest{RequestId: "r5", InstanceId: "l1", Tail: -4}) // all
	data, end, _ := logsOf(t, n.sched, "r1")
	if string(data) != "name-l1 line 1\nname-l1 line 2\nname-l1 line 3\n" || end.GetError() != "" {
		t.Errorf("r1: %q, end %v", data, end)
	}
	if _, end, _ = logsOf(t, n.sched, "r2"); end.GetError() != "instance not found" {
		t.Errorf("r2 end = %v", end)
	}
	if data, _, _ = logsOf(t, n.sched, "r3"); string(data) != "name-l1 line 3\n" {
		t.Errorf("r3 = %q", data)
	}
	if data, _, _ = logsOf(t, n.sched, "r5"); len(bytes.Split(data, []byte("\n"))) != 4 {
		t.Errorf("r5 (negative tail) = %q", data)
	}

	big := bytes.Repeat([]byte("0123456789abcdef"), 5000) // 80000 bytes
	n.sup.rt.SetLogs(big)
	n.sched.RequestLogs(&commonpb.LogRequest{RequestId: "r4", InstanceId: "l1"})
	data, _, chunks := logsOf(t, n.sched, "r4")
	if !bytes.Equal(data, big) || chunks != 3 {
		t.Errorf("r4: %d bytes in %d chunks", len(data), chunks)
	}
}

// followSupervisor's Logs, when following, writes one line then blocks
// until its context ends, and records which requests' contexts ended.
type followSupervisor struct {
	*fakeSupervisor
	mu        sync.Mutex
	following map[string]chan struct{} // by container; closed on ctx done
}

func (f *followSupervisor) Logs(ctx context.Context, id string, opts runtime.LogOptions, w io.Writer) error {
	if !opts.Follow {
		return f.fakeSupervisor.Logs(ctx, id, opts, w)
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

func (f *followSupervisor) ended(container string) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.following[container]
}

func TestLogsCancel(t *testing.T) {
	sched := schedlinktest.Start(t, "127.0.0.1:0")
	sup := &followSupervisor{fakeSupervisor: newFakeSupervisor(t), following: map[string]chan struct{}{}}
	if _, err := sup.rt.Start(context.Background(), runtime.Instance{ID: "l1", Name: "name-l1"}); err != nil {
		t.Fatal(err)
	}
	startLink(t, testConfig(t, sched.Addr), nil, sup, openLedger(t))
	sched.WaitReady(t, 1)

	// Two follow requests (the container name tells them apart).
	sched.RequestLogs(&commonpb.LogRequest{RequestId: "f1", InstanceId: "l1", Container: "a", Follow: true})
	sched.RequestLogs(&commonpb.LogRequest{RequestId: "f2", InstanceId: "l1", Container: "b", Follow: true})
	eventually(t, hasChunk(sched, "f1", false), func() string { return "first chunk of f1" })
	eventually(t, hasChunk(sched, "f2", false), func() string { return "first chunk of f2" })

	// Cancelling f1 (and an unknown request) ends f1's Logs only.
	sched.RequestLogs(&commonpb.LogRequest{RequestId: "nope", Cancel: true})
	sched.RequestLogs(&commonpb.LogRequest{RequestId: "f1", Cancel: true})
	select {
	case <-sup.ended("a"):
	case <-time.After(waitFor):
		t.Fatal("Logs of the cancelled request still running")
	}
	// The node still serves requests, and f2 still follows.
	sched.RequestLogs(&commonpb.LogRequest{RequestId: "r3", InstanceId: "l1"})
	eventually(t, hasChunk(sched, "r3", true), func() string { return "eof of r3" })
	select {
	case <-sup.ended("b"):
		t.Fatal("Logs of the other request was cancelled too")
	default:
	}
}
