// Package netns creates throwaway network namespaces for root tests, so a
// test can program links, routes and iptables without touching the host.
// Every helper needs root and iproute2's `ip`: outside CI the test skips
// when they are missing, in CI (CI=true) it fails.
package netns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/nsenter"
	"github.com/rik-org/rik/internal/testutil"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
)

// NS is a named network namespace (as made by `ip netns add`).
type NS struct {
	Name string // e.g. rikt-3f9a1c
	Path string // /var/run/netns/<Name>
}

// New creates a network namespace with its loopback up and deletes it when
// the test ends.
func New(t testing.TB) *NS {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "ip")
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("naming netns: %v", err)
	}
	ns := &NS{Name: "rikt-" + hex.EncodeToString(b[:])}
	ns.Path = filepath.Join("/var/run/netns", ns.Name)
	run(t, "ip", "netns", "add", ns.Name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns.Name).CombinedOutput(); err != nil {
			t.Errorf("deleting netns %s: %v: %s", ns.Name, err, out)
		}
	})
	ns.Run(t, "ip", "link", "set", "lo", "up")
	return ns
}

// Do runs fn on an OS thread inside the namespace. The thread is thrown
// away afterwards, so nothing else ever runs in the namespace by accident.
// Sockets fn opens, and processes it starts, live in the namespace.
func (ns *NS) Do(fn func() error) error { return nsenter.Do(ns.Path, fn) }

// Exec runs a command inside the namespace and returns its combined output.
func (ns *NS) Exec(ctx context.Context, name string, args ...string) (string, error) {
	full := append([]string{"netns", "exec", ns.Name, name}, args...)
	out, err := exec.CommandContext(ctx, "ip", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), ns.Name, err, out)
	}
	return string(out), nil
}

// Run runs a command inside the namespace and fails the test if it fails.
func (ns *NS) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := ns.Exec(context.Background(), name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Veth connects a and b with a veth pair: aName (address aAddr, CIDR form
// like "10.99.0.1/24", or "" for none) in a, bName (bAddr) in b, both up.
func Veth(t testing.TB, a *NS, aName, aAddr string, b *NS, bName, bAddr string) {
	t.Helper()
	run(t, "ip", "link", "add", aName, "netns", a.Name, "type", "veth", "peer", "name", bName, "netns", b.Name)
	for _, side := range []struct {
		ns         *NS
		name, addr string
	}{{a, aName, aAddr}, {b, bName, bAddr}} {
		if side.addr != "" {
			side.ns.Run(t, "ip", "addr", "add", side.addr, "dev", side.name)
		}
		side.ns.Run(t, "ip", "link", "set", side.name, "up")
	}
}

// Links returns the names of the links in the namespace.
func (ns *NS) Links(t testing.TB) []string {
	t.Helper()
	h, err := vnetns.GetFromPath(ns.Path)
	if err != nil {
		t.Fatalf("opening netns %s: %v", ns.Name, err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatalf("netlink in %s: %v", ns.Name, err)
	}
	defer nh.Close()
	links, err := nh.LinkList()
	if err != nil {
		t.Fatalf("listing links in %s: %v", ns.Name, err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return names
}

// Serve answers every TCP connection to addr inside the namespace with
// reply(conn), until the test ends.
func (ns *NS) Serve(t testing.TB, addr string, reply func(net.Conn) string) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("listening on %s in %s: %v", addr, ns.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() { // ends when the listener is closed
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, reply(c))
			c.Close()
		}
	}()
}

// Fetch connects to addr from inside the namespace and returns all it
// reads; connecting, and then reading, may each take up to timeout.
func (ns *NS) Fetch(addr string, timeout time.Duration) (string, error) {
	var out string
	err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
			return err
		}
		b, err := io.ReadAll(c)
		out = string(b)
		return err
	})
	return out, err
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}
