// Package clock is the time of the riklet's delays (restart backoff,
// probe intervals): the machine's, or a fake one in tests (clocktest).
package clock

import "time"

// Clock tells the time and runs functions after a delay.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d elapsed, unless the
	// timer is stopped before.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc.
type Timer interface {
	// Stop prevents the call if it has not happened yet; it reports
	// whether it did.
	Stop() bool
}

// Real is the clock of the machine.
type Real struct{}

// Now implements Clock.
func (Real) Now() time.Time { return time.Now() }

// AfterFunc implements Clock.
func (Real) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
