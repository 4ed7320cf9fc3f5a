// Package testutil holds helpers shared by rik's tests. Tests that need the
// host (root, runc, iptables, QEMU) call these: outside CI they skip when
// something is missing; in CI (CI=true) they fail, so a missing tool never
// turns into a silently skipped test. With -short (unit tests only: `make
// test-short`) they always skip, in CI too, even as root.
package testutil

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// InCI reports whether the tests run in CI (CI=true).
func InCI() bool { return os.Getenv("CI") == "true" }

// SkipShort skips a test that needs the host when the tests run with
// -short. Every Require helper calls it first.
func SkipShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping with -short: the test needs the host")
	}
}

// Unavailable skips the test outside CI (and with -short) and fails it in
// CI.
func Unavailable(t testing.TB, why string) {
	t.Helper()
	SkipShort(t)
	if InCI() {
		t.Fatalf("required in CI: %s", why)
	}
	t.Skipf("skipping: %s", why)
}

// RequireRoot needs the test to run as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	SkipShort(t)
	if os.Geteuid() != 0 {
		Unavailable(t, "test needs root")
	}
}

// RequireTool needs each named executable on PATH.
func RequireTool(t testing.TB, names ...string) {
	t.Helper()
	SkipShort(t)
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			Unavailable(t, n+" not found on PATH")
		}
	}
}

// RequireFile needs the file to exist.
func RequireFile(t testing.TB, path string) {
	t.Helper()
	SkipShort(t)
	if _, err := os.Stat(path); err != nil {
		Unavailable(t, path+" missing")
	}
}

// Eventually polls cond (every 5ms) until it holds, and fails the test
// with msg() when it still does not after timeout.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", msg())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
