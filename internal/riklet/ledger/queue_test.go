package ledger

import (
	"fmt"
	"slices"
	"testing"

	"github.com/rik-org/rik/api/proto/commonpb"
)

func im(id string, st commonpb.ResourceStatus) *commonpb.InstanceMetric {
	return &commonpb.InstanceMetric{InstanceId: id, Status: st}
}

func queueItems(q *queue) []string {
	var out []string
	for _, m := range q.items {
		out = append(out, m.GetInstanceId()+":"+m.GetStatus().String())
	}
	return out
}

func TestStatusQueue(t *testing.T) {
	const (
		C = commonpb.ResourceStatus_CREATING
		R = commonpb.ResourceStatus_RUNNING
		F = commonpb.ResourceStatus_FAILED
		T = commonpb.ResourceStatus_TERMINATED
	)
	q := newQueue(4)
	q.push(im("a", C))
	q.push(im("a", R))
	q.push(im("b", C))
	q.push(im("a", T))
	// Full: pushing b:RUNNING drops a's and b's older non-terminal statuses.
	q.push(im("b", R))
	if got, want := queueItems(q), []string{"a:TERMINATED", "b:RUNNING"}; !slices.Equal(got, want) {
		t.Fatalf("after compaction %v, want %v", got, want)
	}
	// Terminal statuses are never dropped, even past the bound.
	for _, id := range []string{"c", "d", "e", "f"} {
		q.push(im(id, F))
	}
	if q.len() != 6 {
		t.Fatalf("len %d: %v", q.len(), queueItems(q))
	}
	m, ok := q.peek()
	if !ok || m.GetInstanceId() != "a" {
		t.Fatalf("peek = %v", m)
	}
	q.pop(m)
	q.pop(m) // popping what is no longer first does nothing
	if q.len() != 5 {
		t.Fatalf("len after pop %d", q.len())
	}
	// Reset: latest statuses of owned instances first, others kept in order.
	q.reset([]*commonpb.InstanceMetric{im("b", R), im("z", R)})
	if got, want := queueItems(q), []string{"b:RUNNING", "z:RUNNING", "c:FAILED", "d:FAILED", "e:FAILED", "f:FAILED"}; !slices.Equal(got, want) {
		t.Fatalf("after reset %v, want %v", got, want)
	}
	select {
	case <-q.ready:
	default:
		t.Error("reset did not signal")
	}
}

// BenchmarkStatusQueue: push and drain one status, queue full of others.
func BenchmarkStatusQueue(b *testing.B) {
	q := newQueue(1024)
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
