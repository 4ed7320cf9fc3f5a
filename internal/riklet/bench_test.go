package riklet

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/internal/workload"
)

// BenchmarkLedgerPut: one status change saved (atomic write + fsync) with
// 100 instances in the ledger.
func BenchmarkLedgerPut(b *testing.B) {
	l, err := OpenLedger(filepath.Join(b.TempDir(), "ledger.json"), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	def := []byte(podDef("web", "Always"))
	for i := 0; i < 100; i++ {
		e := Entry{InstanceID: fmt.Sprintf("id-%d", i), Name: "web", Kind: workload.KindPod, Definition: def,
			Last: LastStatus{Status: workload.StatusRunning}, CreatedAt: time.Now()}
		if err := l.Put(e); err != nil {
			b.Fatal(err)
		}
	}
	e, _ := l.Get("id-0")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.Restarts = i
		if err := l.Put(e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStatusQueue: push and drain one status, queue full of others.
func BenchmarkStatusQueue(b *testing.B) {
	q := newStatusQueue(1024)
	for i := 0; i < 1023; i++ {
		q.push(im(fmt.Sprintf("i%d", i%100), commonpb.ResourceStatus_RUNNING))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		q.push(im("x", commonpb.ResourceStatus_RUNNING))
		if m, ok := q.peek(); ok {
			q.pop(m)
		}
	}
}

// BenchmarkCreateDestroy: b.N instances created (RUNNING seen by the
// scheduler) then destroyed (TERMINATED seen), all in flight together,
// through gRPC, the agent, the ledger and the fake runtime.
func BenchmarkCreateDestroy(b *testing.B) {
	sched := startScheduler(b, "127.0.0.1:0")
	cfg, pods := testConfig(b, sched, b.TempDir())
	cfg.Logger = slog.New(slog.DiscardHandler)
	startNode(b, cfg, pods)
	waitReady(b, sched, 1)
	def := podDef("web", "Always")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sched.create(fmt.Sprintf("b%d", i), def)
	}
	waitCount(b, sched, commonpb.ResourceStatus_RUNNING, b.N)
	for i := 0; i < b.N; i++ {
		sched.destroy(fmt.Sprintf("b%d", i))
	}
	waitCount(b, sched, commonpb.ResourceStatus_TERMINATED, b.N)
}

func waitCount(b *testing.B, s *fakeScheduler, st commonpb.ResourceStatus, n int) {
	deadline := time.Now().Add(5 * time.Minute)
	for s.countStatus(st) < n {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d %s", s.countStatus(st), n, st)
		}
		time.Sleep(time.Millisecond)
	}
}
