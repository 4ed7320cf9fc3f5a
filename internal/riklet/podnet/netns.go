package podnet

import (
	"errors"
	"fmt"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// OpenNetlink opens netlink in the network namespace at path ("" = the
// caller's own).
func OpenNetlink(path string) (*netlink.Handle, error) { return openHost(path) }

// CreateNetns creates a network namespace bound at path (which must not
// exist); no goroutine is left inside it.
func CreateNetns(path string) error { return newNetns(path) }

// IsNetns reports whether path is a bound network namespace.
func IsNetns(path string) bool { return isNsMount(path) }

// RemoveNetns unbinds and removes the namespace at path; none is fine.
func RemoveNetns(path string) error {
	var errs []error
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("unmounting netns %s: %w", path, err))
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("removing netns %s: %w", path, err))
	}
	return errors.Join(errs...)
}
