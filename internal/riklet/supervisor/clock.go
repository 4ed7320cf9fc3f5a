package supervisor

import "time"

// Clock is the supervisor's time: when an instance started (its restart
// backoff resets after it ran long enough), when it was created, and the
// delays before restarts and destroy retries. Tests use a fake one whose
// timers they fire.
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

// RealClock is the clock of the machine.
type RealClock struct{}

// Now implements Clock.
func (RealClock) Now() time.Time { return time.Now() }

// AfterFunc implements Clock.
func (RealClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
