package supervisor

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/workload"
)

func TestDecideExit(t *testing.T) {
	for _, tc := range []struct {
		policy workload.RestartPolicy
		code   int
		want   exitOutcome
	}{
		{workload.RestartAlways, 0, exitOutcome{restart: true}},
		{workload.RestartAlways, 1, exitOutcome{restart: true}},
		{"", 0, exitOutcome{restart: true}},
		{workload.RestartOnFailure, 0, exitOutcome{status: workload.StatusTerminated, reason: api.ReasonCompleted}},
		{workload.RestartOnFailure, 137, exitOutcome{restart: true}},
		{workload.RestartNever, 0, exitOutcome{status: workload.StatusTerminated, reason: api.ReasonCompleted}},
		{workload.RestartNever, 2, exitOutcome{status: workload.StatusFailed, reason: api.ReasonError}},
		{workload.RestartNever, -1, exitOutcome{status: workload.StatusFailed, reason: api.ReasonError}},
	} {
		if got := decideExit(tc.policy, tc.code); got != tc.want {
			t.Errorf("decideExit(%q, %d) = %+v, want %+v", tc.policy, tc.code, got, tc.want)
		}
	}
}

func TestExitPolicies(t *testing.T) {
	for _, tc := range []struct {
		policy  string
		code    int
		restart bool
		final   string
	}{
		{"Never", 0, false, "TERMINATED(Completed)"},
		{"Never", 3, false, "FAILED(Error)"},
		{"OnFailure", 0, false, "TERMINATED(Completed)"},
		{"OnFailure", 1, true, ""},
		{"Always", 0, true, ""},
		{"Always", 2, true, ""},
	} {
		t.Run(fmt.Sprintf("%s-%d", tc.policy, tc.code), func(t *testing.T) {
			n := newNode(t, "", options{})
			n.create("e", podDef("job", tc.policy))
			n.exit("e", tc.code)
			if !tc.restart {
				n.wantNames("e", "CREATING", "RUNNING", tc.final)
				m := n.last("e")
				if !m.GetHasExitCode() || m.GetExitCode() != int32(tc.code) || m.GetRestarts() != 0 || m.GetIp() == "" {
					t.Errorf("final status = %v", m)
				}
				// The ledger keeps the ended instance; nothing is scheduled.
				if e, ok := n.led.Get("e"); !ok || string(e.Last.Status)+"("+e.Last.Reason+")" != tc.final {
					t.Errorf("ledger = %+v", e)
				}
				if n.fake.Starts() != 1 || len(n.clock.Pending()) != 0 {
					t.Errorf("starts %d, pending %v: restarted", n.fake.Starts(), n.clock.Pending())
				}
				return
			}
			back := n.last("e")
			if back.GetReason() != api.ReasonBackOff || back.GetStatus().String() != "CREATING" || back.GetRestarts() != 1 ||
				back.GetExitCode() != int32(tc.code) || back.GetMessage() != fmt.Sprintf("exited with code %d, restarting in %s", tc.code, base) {
				t.Errorf("backoff status = %v", back)
			}
			n.advance(base)
			again := n.last("e")
			if again.GetStatus().String() != "RUNNING" || again.GetRestarts() != 1 || again.GetIp() == "" {
				t.Errorf("restarted status = %v", again)
			}
			if n.fake.Starts() != 2 || !slices.Contains(n.fake.Running(), "e") {
				t.Errorf("starts %d (want 2), running %v", n.fake.Starts(), n.fake.Running())
			}
			// A second exit restarts again, restarts=2.
			n.exit("e", tc.code)
			n.advance(max)
			if m := n.last("e"); m.GetStatus().String() != "RUNNING" || m.GetRestarts() != 2 {
				t.Errorf("after a second exit: %v", m)
			}
			// A restart keeps what the runtime holds (logs).
			if slices.Contains(n.fake.Forgotten(), "e") {
				t.Error("restart made the runtime forget e")
			}
		})
	}
}

// A runtime failure without an exit code follows the policy too: Never
// makes it FAILED with the runtime's reason.
func TestRuntimeFailureAfterStart(t *testing.T) {
	n := newNode(t, "", options{})
	n.create("v1", podDef("vm", "Never"))
	n.sup.Report(runtime.Status{InstanceID: "v1", Phase: runtime.PhaseFailed, Reason: api.ReasonVMCrashed, Message: "guest panicked"})
	n.settle()
	m := n.last("v1")
	if m.GetStatus().String() != "FAILED" || m.GetReason() != api.ReasonVMCrashed || m.GetMessage() != "guest panicked" || m.GetHasExitCode() {
		t.Errorf("status = %v", m)
	}
	n.create("v2", podDef("vm", "Always"))
	n.sup.Report(runtime.Status{InstanceID: "v2", Phase: runtime.PhaseFailed, Message: "guest panicked"})
	n.settle()
	if m := n.last("v2"); m.GetReason() != api.ReasonBackOff || m.GetMessage() != "failed: guest panicked, restarting in "+base.String() {
		t.Errorf("status = %v", m)
	}
}

func TestRestartBackoffGrowsAndResets(t *testing.T) {
	n := newNode(t, "", options{})
	n.create("b1", podDef("web", "Always"))
	exitAndRestart := func(restarts int32, want time.Duration) {
		t.Helper()
		n.exit("b1", 1)
		m := n.last("b1")
		if m.GetReason() != api.ReasonBackOff || m.GetRestarts() != restarts ||
			m.GetMessage() != "exited with code 1, restarting in "+want.String() {
			t.Errorf("restart %d: %v, want a delay of %v", restarts, m, want)
		}
		starts := n.fake.Starts()
		n.advance(want - time.Nanosecond)
		if n.fake.Starts() != starts {
			t.Fatalf("restart %d: restarted before its delay", restarts)
		}
		n.advance(time.Nanosecond)
		if m := n.last("b1"); m.GetStatus().String() != "RUNNING" || m.GetRestarts() != restarts || n.fake.Starts() != starts+1 {
			t.Fatalf("restart %d: %v after its delay", restarts, m)
		}
	}
	exitAndRestart(1, base)
	exitAndRestart(2, 2*base)
	exitAndRestart(3, max)
	exitAndRestart(4, max) // capped
	n.advance(reset)       // ran long enough: the delay resets
	exitAndRestart(5, base)
}

func TestDestroyDuringRestartBackoff(t *testing.T) {
	n := newNode(t, "", options{})
	n.create("d1", podDef("web", "Always"))
	n.exit("d1", 1)
	if m := n.last("d1"); m.GetReason() != api.ReasonBackOff {
		t.Fatalf("status = %v", m)
	}
	n.destroy("d1")
	n.wantNames("d1", "CREATING", "RUNNING", "CREATING(BackOff)", "DESTROYING", "TERMINATED(Destroyed)")
	n.advance(time.Hour) // past the restart delay
	if got := n.fake.Starts(); got != 1 {
		t.Errorf("starts = %d: a destroyed instance was restarted", got)
	}
	if r := n.fake.Running(); len(r) != 0 {
		t.Errorf("running %v", r)
	}
}

// An exit reported for an instance that is not running (it is waiting to
// restart) does not count twice.
func TestExitOfInstanceNotRunningIgnored(t *testing.T) {
	n := newNode(t, "", options{})
	n.create("x1", podDef("web", "Always"))
	n.exit("x1", 1)
	code := 1
	n.sup.Report(runtime.Status{InstanceID: "x1", Phase: runtime.PhaseExited, ExitCode: &code})
	n.sup.Report(runtime.Status{InstanceID: "unknown", Phase: runtime.PhaseExited, ExitCode: &code})
	n.settle()
	n.wantNames("x1", "CREATING", "RUNNING", "CREATING(BackOff)")
	if got := n.clock.Pending(); len(got) != 1 {
		t.Errorf("pending restarts %v, want one", got)
	}
	n.advance(base)
	if m := n.last("x1"); m.GetStatus().String() != "RUNNING" || m.GetRestarts() != 1 {
		t.Errorf("status = %v", m)
	}
}

// Closing the supervisor drops the restarts it scheduled: the next riklet
// settles the instance.
func TestCloseDropsScheduledRestarts(t *testing.T) {
	n := newNode(t, "", options{})
	n.create("c1", podDef("web", "Always"))
	n.exit("c1", 1)
	n.close()
	if got := n.clock.Pending(); len(got) != 0 {
		t.Errorf("pending after Close: %v", got)
	}
	n.clock.Advance(time.Hour)
	if n.fake.Starts() != 1 {
		t.Errorf("restarted after Close")
	}
}
