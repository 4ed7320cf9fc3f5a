package service

import (
	"testing"
	"time"
)

func TestOrphansDue(t *testing.T) {
	var o orphans
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	steps := []struct {
		id   string
		at   time.Duration
		want bool
	}{
		{"a", 0, true},
		{"a", time.Second, false},
		{"b", time.Second, true},
		{"a", orphanEvery - time.Nanosecond, false},
		{"a", orphanEvery, true},
		{"b", orphanEvery, false},
		{"a", orphanEvery + time.Second, false},
		{"b", orphanEvery + time.Second, true},
	}
	for i, s := range steps {
		if got := o.due(s.id, t0.Add(s.at)); got != s.want {
			t.Errorf("step %d: due(%s, +%s) = %v, want %v", i, s.id, s.at, got, s.want)
		}
	}
	if len(o.sent) != 2 {
		t.Errorf("%d ids remembered, want 2", len(o.sent))
	}
	o.due("c", t0.Add(3*orphanEvery))
	if len(o.sent) != 1 {
		t.Errorf("old ids not forgotten: %v", o.sent)
	}
}
