// Package nsenter runs code inside a network namespace without ever
// leaving another goroutine there: fn runs on an OS thread of its own that
// enters the namespace and is thrown away afterwards.
package nsenter

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Do runs fn inside the network namespace at path (e.g.
// /var/run/netns/<name>) and returns its error. Sockets fn opens, and
// processes it starts, live in the namespace.
func Do(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() { // ends with fn
		runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
		h, err := netns.GetFromPath(path)
		if err != nil {
			errc <- fmt.Errorf("opening netns %s: %w", path, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("entering netns %s: %w", path, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Netlink opens a netlink handle on the network namespace at path; the
// handle works there from any thread.
func Netlink(path string) (*netlink.Handle, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("opening netns %s: %w", path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("opening netlink in %s: %w", path, err)
	}
	return h, nil
}
