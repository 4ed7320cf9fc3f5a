// Package e2e runs rik's real binaries (controller, scheduler, riklets,
// rikctl) with real runc, iptables and QEMU, every process inside network
// namespaces the tests create. It needs root: outside CI a missing tool
// skips the tests, with CI=true it fails them.
//
// Topology: a "net" namespace holds a bridge; the controller, the
// scheduler and the test's registry and rootfs servers live in a "ctl"
// namespace, rikctl and HTTP clients in a "client" namespace, each riklet
// in its own node namespace (172.31.0.0/24 exists only there).
//
// Security: a cluster uses mutual TLS unless its options say insecure. The
// harness runs `rik ca init`, `rik ca issue controller` for the
// controllers, and `rik token create` for each riklet, which joins with
// the token and the CA's hash.
//
// Environment:
//   - RIK_BIN_DIR: directory of the binaries (set by `make test`); unset,
//     they are built into a temporary directory on first use.
//   - RIK_TEST_KERNEL_DIR: guest kernel for functions (test/kernel/fetch.sh),
//     default /var/cache/rik-test/kernel.
//   - RIK_E2E_KEEP=1: keep the logs and state directory of a failed test.
//   - RIK_E2E_FIREWALL=nftables|iptables: every riklet's --firewall
//     (default: the riklet's auto), for a whole run on one backend.
//   - CI=true: a missing tool fails instead of skipping. -short skips all.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if builtDir != "" {
		os.RemoveAll(builtDir)
	}
	os.Exit(code)
}

// bins are the paths of the binaries under test.
type bins struct {
	controller, scheduler, riklet, rikctl, rikInit, rik string
}

var (
	binOnce  sync.Once
	binSet   bins
	binErr   error
	builtDir string // temp dir to remove, when we built the binaries
)

// binaries returns the binaries, building them once when RIK_BIN_DIR is unset.
func binaries(t testing.TB) bins {
	t.Helper()
	binOnce.Do(func() {
		dir := os.Getenv("RIK_BIN_DIR")
		if dir == "" {
			dir, binErr = buildBinaries()
			if binErr != nil {
				return
			}
			builtDir = dir
		}
		binSet = bins{
			controller: filepath.Join(dir, "controller"),
			scheduler:  filepath.Join(dir, "scheduler"),
			riklet:     filepath.Join(dir, "riklet"),
			rikctl:     filepath.Join(dir, "rikctl"),
			rikInit:    filepath.Join(dir, "rik-init"),
			rik:        filepath.Join(dir, "rik"),
		}
		for _, p := range []string{binSet.controller, binSet.scheduler, binSet.riklet, binSet.rikctl, binSet.rikInit, binSet.rik} {
			if _, err := os.Stat(p); err != nil {
				binErr = fmt.Errorf("binary missing (RIK_BIN_DIR=%s; run make build): %w", dir, err)
				return
			}
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binSet
}

// buildBinaries builds the binaries from the module root (../..).
func buildBinaries() (string, error) {
	dir, err := os.MkdirTemp("", "rik-e2e-bin-")
	if err != nil {
		return "", err
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		return "", err
	}
	build := func(cgo bool, pkgs ...string) error {
		args := append([]string{"build", "-o", dir + "/"}, pkgs...)
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		cmd.Env = os.Environ()
		if !cgo {
			cmd.Env = append(cmd.Env, "CGO_ENABLED=0")
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %v: %w: %s", pkgs, err, out)
		}
		return nil
	}
	if err := build(true, "./cmd/controller", "./cmd/scheduler", "./cmd/riklet", "./cmd/rikctl", "./cmd/rik"); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	if err := build(false, "./cmd/rik-init"); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}
