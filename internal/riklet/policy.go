package riklet

import (
	"math/rand/v2"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/workload"
)

// exitOutcome is what the agent does when an instance's process ended.
type exitOutcome struct {
	Restart bool
	Status  workload.Status // final status when not restarting
	Reason  string
}

// decideExit applies a restart policy to an exit code. An empty policy is
// Always (the default).
func decideExit(policy workload.RestartPolicy, code int) exitOutcome {
	switch {
	case policy == workload.RestartNever:
	case policy == workload.RestartOnFailure && code == 0:
	default: // Always, OnFailure with a failure, empty or unknown policy
		return exitOutcome{Restart: true}
	}
	if code == 0 {
		return exitOutcome{Status: workload.StatusTerminated, Reason: api.ReasonCompleted}
	}
	return exitOutcome{Status: workload.StatusFailed, Reason: api.ReasonError}
}

// restartBackoff is the delay before a restart: base, 2*base, 4*base ...
// capped at max, for the step-th consecutive restart (0-based).
func restartBackoff(step int, base, max time.Duration) time.Duration {
	d := base
	for i := 0; i < step && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d
}

// backoff is an exponential backoff with jitter for reconnecting.
type backoff struct {
	min, max time.Duration
	cur      time.Duration
}

// next returns the next delay: the current one with ±20% jitter; the
// current one then doubles up to max.
func (b *backoff) next() time.Duration {
	if b.cur < b.min {
		b.cur = b.min
	}
	d := b.cur
	b.cur *= 2
	if b.cur > b.max {
		b.cur = b.max
	}
	jitter := time.Duration((rand.Float64()*0.4 - 0.2) * float64(d))
	return d + jitter
}

func (b *backoff) reset() { b.cur = 0 }

// sleep waits d or until done is closed; it reports whether d elapsed.
func sleep(done <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return false
	case <-t.C:
		return true
	}
}
