package scheduler

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/scheduler/placement"
)

// BenchmarkScheduleInstance measures CREATE orders through the real gRPC
// services: one op = one ScheduleInstance call, placed among 100 nodes, the
// order received by the node and the status by two controllers.
func BenchmarkScheduleInstance(b *testing.B) {
	h := startScheduler(b, Config{})
	subs := []*subscription{h.subscribe(), h.subscribe()}
	nodes := make([]*fakeNode, 100)
	for i := range nodes {
		nodes[i] = h.register(fmt.Sprintf("n%03d", i), 0, 0)
	}
	def := pod(100, 64, 0)
	i := 0
	for b.Loop() {
		h.create(fmt.Sprintf("i%d", i), def)
		i++
		for _, s := range subs {
			s.next()
		}
	}
	b.StopTimer()
	eventually(b, "every order delivered", func() bool {
		got := 0
		for _, n := range nodes {
			got += len(n.orders)
		}
		return got == i
	})
}

// BenchmarkSubscribeReplay measures a controller (re)subscribing to a
// scheduler that knows 1000 instances: one op = GetStatusUpdates until the
// 1000 replayed statuses are received.
func BenchmarkSubscribeReplay(b *testing.B) {
	h := startScheduler(b, Config{})
	n := h.register("n1", 0, 0)
	def := pod(0, 0, 0)
	const count = 1000
	for i := range count {
		h.create(fmt.Sprintf("i%d", i), def)
	}
	eventually(b, "every order delivered", func() bool { return len(n.orders) == count })
	for b.Loop() {
		s := h.subscribe()
		for range count {
			s.next()
		}
	}
}

// BenchmarkSubscribe measures a controller (re)subscribing to a scheduler
// that holds 10,000 instances: replaying the status of every one (a
// controller without a cursor, or after a scheduler restart) versus
// resuming after the last status it stored.
//
//	go test -run '^$' -bench Subscribe -benchtime 20x ./internal/scheduler/
func BenchmarkSubscribe(b *testing.B) {
	st := newState(slog.New(slog.DiscardHandler), placement.Spread, time.Second, 0, time.Now)
	for i := range 10000 {
		st.create(createOrder(fmt.Sprintf("i%05d", i)), placement.Request{Kind: "pod"}) // no node: PENDING
	}
	for _, tc := range []struct {
		name  string
		epoch string
		after uint64
	}{{"replay-10000", "", 0}, {"resumed", st.epoch, st.statusSeq}} {
		b.Run(tc.name, func(b *testing.B) {
			sent := 0
			for b.Loop() {
				sub, _, _ := st.subscribe(tc.epoch, tc.after)
				for sub.next() != nil {
					sent++
				}
				st.unsubscribe(sub)
			}
			b.ReportMetric(float64(sent)/float64(b.N), "statuses/op")
		})
	}
}
