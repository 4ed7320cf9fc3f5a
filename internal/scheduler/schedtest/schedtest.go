// Package schedtest runs a real scheduler on loopback for the tests of its
// clients (controller, riklet).
package schedtest

import (
	"context"
	"net"
	"testing"

	"github.com/rik-org/rik/internal/scheduler"
)

// Start runs the scheduler with cfg on two new 127.0.0.1 listeners until
// the test ends (then it must stop cleanly), and returns the workers' and
// the controllers' addresses.
func Start(t testing.TB, cfg scheduler.Config) (workers, controllers string) {
	t.Helper()
	wl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		wl.Close()
		t.Fatal(err)
	}
	cfg.WorkersListener, cfg.ControllersListener = wl, cl
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- scheduler.Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("scheduler: %v", err)
		}
	})
	return wl.Addr().String(), cl.Addr().String()
}
