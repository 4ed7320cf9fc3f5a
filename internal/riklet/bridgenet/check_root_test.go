package bridgenet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/rik-org/rik/internal/nsenter"
	"github.com/rik-org/rik/internal/testutil/netns"
)

// unplumbedView reports what a CNI CHECK of the namespace at nsPath would
// look for: eth0's IPv4 addresses, the gateways of its routes, and br0's
// arp_ignore.
func unplumbedView(nsPath string) (string, error) {
	h, err := nsenter.Netlink(nsPath)
	if err != nil {
		return "", err
	}
	defer h.Close()
	veth, err := h.LinkByName(VethDev)
	if err != nil {
		return "", err
	}
	addrs, err := h.AddrList(veth, netlink.FAMILY_V4)
	if err != nil {
		return "", err
	}
	routes, err := h.RouteList(veth, netlink.FAMILY_V4)
	if err != nil {
		return "", err
	}
	var parts []string
	for _, a := range addrs {
		parts = append(parts, "addr "+a.IPNet.String())
	}
	for _, r := range routes {
		if r.Gw != nil {
			dst := "default"
			if r.Dst != nil && !isDefault(r.Dst) {
				dst = r.Dst.String()
			}
			parts = append(parts, "route "+dst+" via "+r.Gw.String())
		}
	}
	var arp []byte
	err = nsenter.Do(nsPath, func() (err error) {
		arp, err = os.ReadFile("/proc/sys/net/ipv4/conf/" + BridgeDev + "/arp_ignore")
		return err
	})
	return strings.Join(parts, ", ") + "; arp_ignore " + strings.TrimSpace(string(arp)), err
}

// TestWithAddress: the veth of a plumbed namespace has its address and
// routes back while f runs (br0 answering no ARP for it), and loses them
// again after, whether f fails or not.
func TestWithAddress(t *testing.T) {
	_, pod := podNS(t)
	a, err := Plumb(pod.Path)
	if err != nil {
		t.Fatal(err)
	}
	const want = "addr 10.99.0.5/24, route default via 10.99.0.1, route 10.200.0.0/16 via 10.99.0.1; arp_ignore 1"
	for _, ferr := range []error{nil, errors.New("check failed")} {
		var during string
		err := WithAddress(pod.Path, a, func() error {
			var err error
			during, err = unplumbedView(pod.Path)
			return errors.Join(err, ferr)
		})
		if !errors.Is(err, ferr) || (ferr == nil && err != nil) {
			t.Fatalf("WithAddress = %v, want %v", err, ferr)
		}
		if during != want {
			t.Errorf("while f runs: %q, want %q", during, want)
		}
		if after, err := unplumbedView(pod.Path); err != nil || after != "; arp_ignore 1" {
			t.Errorf("after: %q, %v; want no address and no route on %s", after, err, VethDev)
		}
		checkPlumbed(t, pod)
	}
}

// fakeChecker is a stateful CNI: it records each CHECK with what the
// namespace looked like then, and fails while fail is set.
type fakeChecker struct {
	mu     sync.Mutex
	nsPath func(id string) string
	seen   []string
	fail   bool
}

func (f *fakeChecker) Check(id string) error {
	view, err := unplumbedView(f.nsPath(id))
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = append(f.seen, fmt.Sprintf("%s: %s (%v)", id, view, err))
	if f.fail {
		return errors.New("CNI CHECK failed")
	}
	return err
}

func (f *fakeChecker) NetnsPath(id string) string { return f.nsPath(id) }

func (f *fakeChecker) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

// TestAdoptChecks: Setup runs no check; a restarted riklet's Adopt runs
// it once, with the veth's address back, and starts the DHCP server only
// when it passes.
func TestAdoptChecks(t *testing.T) {
	first, pods, _, ports := newManager(t)
	ctx := context.Background()
	n, err := first.Setup(ctx, Request{ID: "fn-c", Hostname: "c", MAC: guestMAC})
	if err != nil {
		t.Fatal(err)
	}
	first.Close() // the riklet stops; the network stays
	check := &fakeChecker{nsPath: func(string) string { return n.Netns }, fail: true}
	del := &delRecorder{Pods: pods, nsPath: check.nsPath}
	m, err := New(Config{Pods: del, Ports: ports, CNI: check, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	if err := m.Adopt("fn-c", n); err == nil || !strings.Contains(err.Error(), "CNI CHECK failed") {
		t.Fatalf("Adopt with a failing check = %v, want its error", err)
	}
	if len(m.servers) != 0 {
		t.Errorf("a DHCP server runs for a network that failed its check")
	}
	check.fail = false
	for range 2 {
		if err := m.Adopt("fn-c", n); err != nil {
			t.Fatal(err)
		}
	}
	const view = "fn-c: addr 10.99.2.2/24, route default via 10.99.2.1; arp_ignore 1 (<nil>)"
	if got := check.calls(); len(got) != 2 || got[0] != view || got[1] != view {
		t.Errorf("checks = %q, want two (the failed one, then one) of %q", got, view)
	}
	if len(m.servers) != 1 {
		t.Errorf("DHCP servers = %v, want fn-c's", m.servers)
	}
	checkPlumbed(t, &netns.NS{Path: n.Netns})
	if err := m.Teardown(ctx, "fn-c"); err != nil {
		t.Fatal(err)
	}
	// DEL (Pods.Teardown) found the address back on the veth.
	const delView = "fn-c: addr 10.99.2.2/24, route default via 10.99.2.1; arp_ignore 1"
	if del.seen != delView {
		t.Errorf("DEL saw %q, want %q", del.seen, delView)
	}
	if _, err := os.Stat(n.Netns); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("netns left: %v", err)
	}
}

// delRecorder records what the namespace looked like when Teardown (CNI's
// DEL) ran.
type delRecorder struct {
	Pods
	nsPath func(id string) string
	seen   string
}

func (d *delRecorder) Teardown(ctx context.Context, id string) error {
	view, err := unplumbedView(d.nsPath(id))
	d.seen = id + ": " + view
	return errors.Join(err, d.Pods.Teardown(ctx, id))
}

// TestUnplumb: the veth of a plumbed namespace gets its address and
// routes back for good, once however often it runs; a namespace not
// plumbed, or none, is left alone.
func TestUnplumb(t *testing.T) {
	_, pod := podNS(t)
	const unplumbed = "addr 10.99.0.5/24, route default via 10.99.0.1, route 10.200.0.0/16 via 10.99.0.1"
	if err := Unplumb(pod.Path); err != nil {
		t.Fatal(err)
	}
	if err := nsenter.Do(pod.Path, func() error { _, err := netlink.LinkByName(BridgeDev); return err }); err == nil {
		t.Fatal("Unplumb of a namespace never plumbed made a bridge")
	}
	if _, err := Plumb(pod.Path); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := Unplumb(pod.Path); err != nil {
			t.Fatal(err)
		}
		if got, err := unplumbedView(pod.Path); err != nil || got != unplumbed+"; arp_ignore 1" {
			t.Errorf("after Unplumb: %q, %v; want %q", got, err, unplumbed)
		}
	}
	if err := Unplumb(t.TempDir() + "/gone"); err != nil {
		t.Errorf("Unplumb of no namespace: %v", err)
	}
}
