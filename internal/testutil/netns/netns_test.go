package netns

import (
	"context"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	vnetns "github.com/vishvananda/netns"
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

	// Do runs inside the namespace: a listener in b, reached from a.
	var ln net.Listener
	if err := b.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", "10.98.0.2:7000")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			io.WriteString(c, "hi")
			c.Close()
		}
	}()
	var got []byte
	if err := a.Do(func() error {
		c, err := net.DialTimeout("tcp", "10.98.0.2:7000", 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		got, err = io.ReadAll(c)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if string(got) != "hi" {
		t.Errorf("read %q, want hi", got)
	}

	// Do leaves the caller's namespace alone.
	before, err := vnetns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	if err := a.Do(func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	after, err := vnetns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if !before.Equal(after) {
		t.Errorf("Do changed the calling thread's namespace")
	}

	if _, err := a.Exec(context.Background(), "false"); err == nil {
		t.Errorf("Exec(false): want error")
	}
}
