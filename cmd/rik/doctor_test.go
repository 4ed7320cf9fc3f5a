package main

import (
	"strings"
	"testing"
)

// rik doctor checks this very host: whatever it finds, every check gets a
// line and the summary says how many failed; the exit code follows it.
func TestDoctorRuns(t *testing.T) {
	code, stdout, stderr := rikRun("doctor", "--state-dir", t.TempDir(), "--firewall", "auto")
	if code != 0 && code != 1 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, check := range []string{"root", "runc", "kernel: pod network", "firewall", "ip_forward", "cgroups", "kvm", "guest kernel", "disk "} {
		if !strings.Contains(stdout, "  "+check) && !strings.Contains(stdout, " "+check+" ") {
			t.Errorf("no %q check in:\n%s", check, stdout)
		}
	}
	failed := !strings.Contains(stdout, "\n0 failed, ")
	if failed != (code == 1) {
		t.Errorf("exit %d does not match the summary:\n%s", code, stdout)
	}
}

func TestDoctorBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"doctor", "extra"}, "want 0 argument"},
		{[]string{"doctor", "--firewall", "pf"}, "--firewall: "},
		{[]string{"doctor", "--nope"}, "flag provided but not defined"},
	} {
		code, _, stderr := rikRun(tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("rik %s: exit %d, %q; want 2 with %q", strings.Join(tc.args, " "), code, stderr, tc.want)
		}
	}
}
