package nsenter_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	vnetns "github.com/vishvananda/netns"

	"github.com/rik-org/rik/internal/nsenter"
	"github.com/rik-org/rik/internal/testutil/netns"
)

func TestDoMissingNamespace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope")
	ran := false
	err := nsenter.Do(path, func() error { ran = true; return nil })
	if err == nil || !strings.Contains(err.Error(), "opening netns "+path) || ran {
		t.Errorf("Do(missing) = %v, ran %v; want an opening error and fn not run", err, ran)
	}
}

// fn runs in the namespace, its error is returned, and the caller's thread
// stays where it was.
func TestDoEntersNamespace(t *testing.T) {
	ns := netns.New(t)
	want, err := os.Stat(ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	before, err := vnetns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()

	errFn := errors.New("fn failed")
	err = nsenter.Do(ns.Path, func() error {
		cur, err := os.Stat("/proc/thread-self/ns/net")
		if err != nil {
			return err
		}
		if !os.SameFile(cur, want) {
			return errors.New("fn not inside the namespace")
		}
		return errFn
	})
	if !errors.Is(err, errFn) {
		t.Errorf("Do = %v, want fn's error", err)
	}
	after, err := vnetns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if !before.Equal(after) {
		t.Error("Do changed the calling thread's namespace")
	}
}
