// Package clocktest is a fake clock.Clock whose time moves only when the
// test advances it.
package clocktest

import (
	"slices"
	"sync"
	"time"

	"github.com/rik-org/rik/internal/riklet/clock"
)

// Fake is a clock.Clock whose time moves only when the test advances it;
// the timers due then run, in the test's goroutine, in deadline order.
type Fake struct {
	mu     sync.Mutex
	now    time.Time
	timers []*timer
	armed  chan struct{}
}

type timer struct {
	c  *Fake
	at time.Time
	f  func()
}

// New returns a fake clock at 2026-01-01 00:00 UTC.
func New() *Fake {
	return &Fake{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), armed: make(chan struct{}, 1024)}
}

// Now implements clock.Clock.
func (c *Fake) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc implements clock.Clock; every call is signalled on Armed.
func (c *Fake) AfterFunc(d time.Duration, f func()) clock.Timer {
	c.mu.Lock()
	t := &timer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	c.mu.Unlock()
	select {
	case c.armed <- struct{}{}:
	default: // nobody follows: dropped once the buffer is full
	}
	return t
}

// Armed receives a value each time a timer is set: code waiting on the
// clock has done what it does before it waits.
func (c *Fake) Armed() <-chan struct{} { return c.armed }

func (t *timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	n := len(t.c.timers)
	t.c.timers = slices.DeleteFunc(t.c.timers, func(o *timer) bool { return o == t })
	return len(t.c.timers) < n
}

// Advance moves the time d forward and runs the timers due.
func (c *Fake) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*timer
	c.timers = slices.DeleteFunc(c.timers, func(t *timer) bool {
		if t.at.After(c.now) {
			return false
		}
		due = append(due, t)
		return true
	})
	c.mu.Unlock()
	slices.SortStableFunc(due, func(a, b *timer) int { return a.at.Compare(b.at) })
	for _, t := range due {
		t.f()
	}
}

// Pending lists the delays left before the pending timers fire, sorted.
func (c *Fake) Pending() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Duration
	for _, t := range c.timers {
		out = append(out, t.at.Sub(c.now))
	}
	slices.Sort(out)
	return out
}
