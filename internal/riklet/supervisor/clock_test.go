package supervisor

import "github.com/rik-org/rik/internal/riklet/clock/clocktest"

// fakeClock is a Clock whose time moves only when the test advances it.
type fakeClock = clocktest.Fake

func newFakeClock() *fakeClock { return clocktest.New() }
