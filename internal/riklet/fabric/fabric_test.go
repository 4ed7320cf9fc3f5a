package fabric

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func newTestFabric(t *testing.T, dir string, h Host, mode Mode) *Fabric {
	t.Helper()
	f, err := New(Config{StateDir: dir, Name: "n1", Addr: func() netip.Addr { return addr("192.168.1.1") }, Mode: mode, Host: h})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

var (
	peer2 = Peer{Name: "n2", Addr: addr("192.168.1.2"), Subnet: pfx("10.63.2.0/24")}
	peer3 = Peer{Name: "n3", Addr: addr("192.168.9.3"), Subnet: pfx("10.63.3.0/24")}
	own   = pfx("10.63.1.0/24")
)

func TestApplyAddsAndRemovesPeers(t *testing.T) {
	h := newFakeHost(pfx("192.168.1.0/24"))
	f := newTestFabric(t, t.TempDir(), h, ModeAuto)
	ctx := context.Background()
	if err := f.Apply(ctx, Map{Subnet: own, Peers: []Peer{peer2, peer3}}); err != nil {
		t.Fatal(err)
	}
	if len(h.routes) != 2 || h.routes[peer2.Subnet].VXLAN || !h.routes[peer3.Subnet].VXLAN {
		t.Fatalf("routes %v: want n2 direct, n3 over vxlan", h.routes)
	}
	if h.vxlan == nil || h.vxlan.vtep != addr("10.63.1.0") || h.vxlan.local != addr("192.168.1.1") || len(h.tunnels) != 1 {
		t.Fatalf("vxlan %+v, tunnels %v", h.vxlan, h.tunnels)
	}
	// Same map again: nothing changes.
	calls := h.calls
	if err := f.Apply(ctx, Map{Subnet: own, Peers: []Peer{peer3, peer2}}); err != nil || h.calls != calls {
		t.Fatalf("re-apply: err %v, %d changes", err, h.calls-calls)
	}
	// n3 goes away: its route, tunnel and the device go.
	if err := f.Apply(ctx, Map{Subnet: own, Peers: []Peer{peer2}}); err != nil {
		t.Fatal(err)
	}
	if len(h.routes) != 1 || h.vxlan != nil || len(h.tunnels) != 0 {
		t.Fatalf("after n3 left: routes %v, vxlan %+v, tunnels %v", h.routes, h.vxlan, h.tunnels)
	}
	// n2 moves to another address: its route follows.
	moved := peer2
	moved.Addr = addr("192.168.1.22")
	if err := f.Apply(ctx, Map{Subnet: own, Peers: []Peer{moved}}); err != nil {
		t.Fatal(err)
	}
	if r := h.routes[peer2.Subnet]; r.Via != moved.Addr {
		t.Fatalf("route to n2 via %s, want %s", r.Via, moved.Addr)
	}
	if err := f.Remove(); err != nil || len(h.routes) != 0 {
		t.Fatalf("Remove: %v, routes %v", err, h.routes)
	}
}

func TestSubnetIsKeptAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	h := newFakeHost(pfx("192.168.1.0/24"))
	f := newTestFabric(t, dir, h, ModeAuto)
	short, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := f.Subnet(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Subnet before any map: %v, want the context's error", err)
	}
	got := make(chan netip.Prefix, 1)
	go func() {
		p, _ := f.Subnet(context.Background())
		got <- p
	}()
	if err := f.Apply(context.Background(), Map{Subnet: own}); err != nil {
		t.Fatal(err)
	}
	if p := <-got; p != own {
		t.Fatalf("waiting Subnet got %s, want %s", p, own)
	}
	// The control plane later says another subnet: the node keeps its own.
	if err := f.Apply(context.Background(), Map{Subnet: pfx("10.63.7.0/24")}); err != nil {
		t.Fatal(err)
	}
	again := newTestFabric(t, dir, h, ModeAuto) // a restarted riklet
	if p, err := again.Subnet(short); err != nil || p != own {
		t.Fatalf("after restart: %s, %v; want %s", p, err, own)
	}
}

func TestRestartReconcilesLeftovers(t *testing.T) {
	h := newFakeHost(pfx("192.168.1.0/24"))
	f := newTestFabric(t, t.TempDir(), h, ModeVXLAN)
	if err := f.Apply(context.Background(), Map{Subnet: own, Peers: []Peer{peer2, peer3}}); err != nil {
		t.Fatal(err)
	}
	// A new riklet (after a crash) whose first map lost n2.
	f2 := newTestFabric(t, t.TempDir(), h, ModeVXLAN)
	if err := f2.Apply(context.Background(), Map{Subnet: own, Peers: []Peer{peer3}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.routes[peer2.Subnet]; ok || len(h.tunnels) != 1 || h.tunnels[VTEPMAC("n3")].Underlay != peer3.Addr {
		t.Fatalf("after restart: routes %v, tunnels %v", h.routes, h.tunnels)
	}
}

func TestApplyReportsFailures(t *testing.T) {
	h := newFakeHost(pfx("192.168.1.0/24"))
	h.failAdd = errors.New("netlink says no")
	f := newTestFabric(t, t.TempDir(), h, ModeAuto)
	if err := f.Apply(context.Background(), Map{Subnet: own, Peers: []Peer{peer2}}); err == nil {
		t.Fatal("Apply: no error when a route cannot be added")
	}
	// Fixed: the next map adds it.
	h.failAdd = nil
	if err := f.Apply(context.Background(), Map{Subnet: own, Peers: []Peer{peer2}}); err != nil || len(h.routes) != 1 {
		t.Fatalf("Apply after the failure: %v, routes %v", err, h.routes)
	}
}

func TestNewRejectsBadState(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "fabric.json"), []byte(`{"subnet":"nope"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{StateDir: dir, Name: "n1", Addr: func() netip.Addr { return netip.Addr{} }, Host: newFakeHost()}); err == nil {
		t.Fatal("New with a corrupt state file: no error")
	}
	if _, err := New(Config{StateDir: dir}); err == nil {
		t.Fatal("New without Host: no error")
	}
}
