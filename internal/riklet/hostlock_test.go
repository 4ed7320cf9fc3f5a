package riklet

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/rik-org/rik/internal/testutil/netns"
)

// Issue 8 (5): two riklets in one network namespace erase each other's
// chains and devices: the second is refused, naming the first. One in
// another namespace (e2e nodes, labs) is not.
func TestOneRikletPerNetworkNamespace(t *testing.T) {
	dir := t.TempDir()
	release, err := LockHost(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = LockHost(dir)
	if !errors.Is(err, ErrHostTaken) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("second lock in the same namespace: %v, want %v naming pid %d", err, ErrHostTaken, os.Getpid())
	}
	// Run refuses too, before touching anything.
	cfg, _ := testConfig(t, "127.0.0.1:1", t.TempDir()+"/state")
	cfg.HostLockDir = dir
	if err := Run(t.Context(), cfg); !errors.Is(err, ErrHostTaken) {
		t.Errorf("Run with the host taken: %v, want %v", err, ErrHostTaken)
	}
	if _, err := os.Stat(cfg.StateDir); !os.IsNotExist(err) {
		t.Errorf("refused riklet touched its state dir: %v", err)
	}

	ns := netns.New(t) // root: in CI, else skipped
	if err := ns.Do(func() error {
		r, err := LockHost(dir)
		if err == nil {
			r()
		}
		return err
	}); err != nil {
		t.Errorf("lock in another network namespace: %v", err)
	}
	release()
	again, err := LockHost(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	again()
}
