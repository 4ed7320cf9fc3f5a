package riklet

import (
	"testing"
	"time"
)

// A dead scheduler host must be noticed within ~30s: a ping every Time,
// declared dead after Timeout without an answer, and pings even without
// streams (the scheduler permits them from 5s on).
func TestSchedulerKeepalive(t *testing.T) {
	k := schedulerKeepalive
	if k.Time != 10*time.Second || k.Timeout != 5*time.Second || !k.PermitWithoutStream {
		t.Errorf("keepalive = %+v, want Time 10s, Timeout 5s, PermitWithoutStream", k)
	}
	if k.Time+k.Timeout > 30*time.Second {
		t.Errorf("dead scheduler noticed after %s, want at most 30s", k.Time+k.Timeout)
	}
}
