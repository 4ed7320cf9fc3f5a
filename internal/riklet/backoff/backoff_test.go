package backoff

import (
	"context"
	"testing"
	"time"
)

func TestExponential(t *testing.T) {
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for step, w := range want {
		if got := Exponential(step, time.Second, time.Minute); got != w*time.Second {
			t.Errorf("step %d: %v, want %v", step, got, w*time.Second)
		}
	}
	if got := Exponential(1000, time.Second, time.Minute); got != time.Minute {
		t.Errorf("step 1000: %v", got)
	}
}

func TestJitteredJitterAndCap(t *testing.T) {
	b := Jittered{Min: 200 * time.Millisecond, Max: 5 * time.Second}
	base := 200 * time.Millisecond
	for i := 0; i < 12; i++ {
		d := b.Next()
		if d < base*8/10 || d > base*12/10 {
			t.Errorf("try %d: %v not within 20%% of %v", i, d, base)
		}
		base = min(base*2, 5*time.Second)
	}
	b.Reset()
	if d := b.Next(); d > 240*time.Millisecond {
		t.Errorf("after reset: %v", d)
	}
}

func TestSleepEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Error("Sleep reported the delay elapsed on a done context")
	}
	if !Sleep(context.Background(), 0) {
		t.Error("Sleep(0) did not elapse")
	}
}
