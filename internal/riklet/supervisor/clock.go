package supervisor

import "github.com/rik-org/rik/internal/riklet/clock"

// Clock is the supervisor's time: when an instance started (its restart
// backoff resets after it ran long enough), when it was created, and the
// delays before restarts and destroy retries. Tests use a fake one whose
// timers they fire.
type Clock = clock.Clock

// Timer is a pending AfterFunc.
type Timer = clock.Timer

// RealClock is the clock of the machine.
type RealClock = clock.Real
