package clocktest

import (
	"slices"
	"testing"
	"time"
)

func TestFake(t *testing.T) {
	c := New()
	start := c.Now()
	var ran []string
	c.AfterFunc(2*time.Second, func() { ran = append(ran, "b") })
	c.AfterFunc(time.Second, func() { ran = append(ran, "a") })
	stopped := c.AfterFunc(time.Second, func() { ran = append(ran, "stopped") })
	if !stopped.Stop() || stopped.Stop() {
		t.Error("Stop reports wrong")
	}
	if got := c.Pending(); !slices.Equal(got, []time.Duration{time.Second, 2 * time.Second}) {
		t.Errorf("Pending = %v", got)
	}
	if len(c.Armed()) != 3 {
		t.Errorf("%d timers signalled, want 3", len(c.Armed()))
	}
	c.Advance(500 * time.Millisecond)
	if len(ran) != 0 {
		t.Fatalf("ran %v early", ran)
	}
	c.Advance(2 * time.Second)
	if !slices.Equal(ran, []string{"a", "b"}) || !c.Now().Equal(start.Add(2500*time.Millisecond)) || len(c.Pending()) != 0 {
		t.Errorf("ran %v at %v, pending %v", ran, c.Now().Sub(start), c.Pending())
	}
}
