// Package backoff has the riklet's delays between attempts: the doubling
// delay of instance restarts and the jittered one of reconnects.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Exponential is the delay before the step-th consecutive attempt
// (0-based): base, 2*base, 4*base ... capped at max.
func Exponential(step int, base, max time.Duration) time.Duration {
	d := base
	for i := 0; i < step && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d
}

// Jittered is an exponential backoff with ±20% jitter, for reconnecting.
type Jittered struct {
	Min, Max time.Duration
	cur      time.Duration
}

// Next returns the next delay: the current one with ±20% jitter; the
// current one then doubles up to Max.
func (b *Jittered) Next() time.Duration {
	if b.cur < b.Min {
		b.cur = b.Min
	}
	d := b.cur
	b.cur *= 2
	if b.cur > b.Max {
		b.cur = b.Max
	}
	jitter := time.Duration((rand.Float64()*0.4 - 0.2) * float64(d))
	return d + jitter
}

// Reset starts again from Min.
func (b *Jittered) Reset() { b.cur = 0 }

// Sleep waits d or until ctx is done; it reports whether d elapsed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
