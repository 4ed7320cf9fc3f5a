package netns

import (
	"context"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNamespacesAreIsolatedAndConnected(t *testing.T) {
	a, b := New(t), New(t)
	if _, err := os.Stat(a.Path); err != nil {
		t.Fatalf("netns file: %v", err)
	}
	Veth(t, a, "va", "10.98.0.1/30", b, "vb", "10.98.0.2/30")

	// The veth ends are in the namespaces, not in the test's own.
	if out := a.Run(t, "ip", "-o", "addr", "show", "va"); !strings.Contains(out, "10.98.0.1/30") {
		t.Errorf("va in %s: %s", a.Name, out)
	}
	if _, err := net.InterfaceByName("va"); err == nil {
		t.Errorf("va visible in the test's own namespace")
	}

	// Serve and Fetch run inside the namespaces: a listener in b, reached
	// from a, not from the test's own namespace.
	b.Serve(t, "10.98.0.2:7000", func(net.Conn) string { return "hi" })
	if got, err := a.Fetch("10.98.0.2:7000", 2*time.Second); err != nil || got != "hi" {
		t.Errorf("Fetch from %s = %q, %v; want hi", a.Name, got, err)
	}
	if got, err := b.Fetch("10.98.0.1:7000", 2*time.Second); err == nil {
		t.Errorf("Fetch of a port nobody serves = %q, want an error", got)
	}

	// Links lists the namespace's links, not the test's own.
	if links := a.Links(t); !slices.Contains(links, "va") || !slices.Contains(links, "lo") || slices.Contains(links, "vb") {
		t.Errorf("links of %s = %v, want lo and va, not vb", a.Name, links)
	}

	// Do is nsenter.Do, tested there (it leaves the caller's namespace alone).

	if _, err := a.Exec(context.Background(), "false"); err == nil {
		t.Errorf("Exec(false): want error")
	}
}
