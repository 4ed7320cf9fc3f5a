// Package nsenter runs code inside a network namespace without ever
// leaving another goroutine there: fn runs on an OS thread of its own that
// enters the namespace and is thrown away afterwards.
package nsenter

import (
	"fmt"
	"runtime"

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
