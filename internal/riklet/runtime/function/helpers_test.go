package function

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/rik-org/rik/internal/testutil"
	"github.com/rik-org/rik/internal/testutil/netns"
	"github.com/rik-org/rik/internal/workload"
)

// require fails the test in CI (CI=true) and skips it elsewhere when a
// precondition of a root test is missing.
func require(t testing.TB, ok bool, format string, args ...any) {
	t.Helper()
	if !ok {
		testutil.Unavailable(t, fmt.Sprintf(format, args...))
	}
}

// testKernel returns the kernel and modules dir from RIK_TEST_KERNEL_DIR.
func testKernel(t testing.TB) (kernel, modules string) {
	t.Helper()
	dir := os.Getenv("RIK_TEST_KERNEL_DIR")
	require(t, dir != "", "RIK_TEST_KERNEL_DIR is not set: run test/kernel/fetch.sh /var/cache/rik-test/kernel and export RIK_TEST_KERNEL_DIR=/var/cache/rik-test/kernel")
	ks, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	ms, _ := filepath.Glob(filepath.Join(dir, "lib", "modules", "*"))
	require(t, len(ks) == 1 && len(ms) == 1, "RIK_TEST_KERNEL_DIR=%s does not hold one boot/vmlinuz-* and one lib/modules/*: run test/kernel/fetch.sh", dir)
	return ks[0], ms[0]
}

func requireRootTools(t testing.TB, tools ...string) {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, tools...)
}

var (
	initOnce sync.Once
	initPath string
	initErr  error
)

// buildInit builds cmd/rik-init once per test binary.
func buildInit(t testing.TB) string {
	t.Helper()
	initOnce.Do(func() {
		dir, err := os.MkdirTemp("", "rik-init-")
		if err != nil {
			initErr = err
			return
		}
		initPath = filepath.Join(dir, "rik-init")
		cmd := osexec.Command("go", "build", "-o", initPath, "github.com/rik-org/rik/cmd/rik-init")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			initErr = fmt.Errorf("go build rik-init: %w: %s", err, out)
		}
	})
	if initErr != nil {
		t.Fatal(initErr)
	}
	return initPath
}

// busyboxTree writes a root filesystem tree: busybox, an /sbin/init that
// serves page over HTTP on :80, and /bin/fail.sh that exits with code 3.
func busyboxTree(t testing.TB, page string) string {
	t.Helper()
	bb, err := osexec.LookPath("busybox")
	require(t, err == nil, "needs busybox (busybox-static): %v", err)
	root := t.TempDir()
	for _, d := range []string{"bin", "sbin", "www", "etc", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	write := func(p string, b []byte, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(root, p), b, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("bin/busybox", data, 0o755)
	for _, c := range []string{"sh", "httpd", "echo", "sleep", "cat"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", c)); err != nil {
			t.Fatal(err)
		}
	}
	write("sbin/init", []byte("#!/bin/sh\necho guest: serving\nexec /bin/httpd -f -p 80 -h /www\n"), 0o755)
	write("bin/fail.sh", []byte("#!/bin/sh\necho guest: failing\nexit 3\n"), 0o755)
	write("www/index.html", []byte(page), 0o644)
	return root
}

// tarGz packs the tree at root.
func tarGz(t testing.TB, root string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		link := ""
		if fi.Mode()&os.ModeSymlink != 0 {
			link, _ = os.Readlink(p)
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Name = rel
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(tw, f)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// testNetwork is a Network for tests: one throwaway network namespace with
// a real TAP per instance (10.63.<n>.0/30: guest .1, tap .2). It never
// touches the host's network.
type testNetwork struct {
	ns *netns.NS

	mu   sync.Mutex
	next int
	taps map[string]string // id -> tap
}

func newTestNetwork(t testing.TB) *testNetwork {
	t.Helper()
	return &testNetwork{ns: netns.New(t), taps: map[string]string{}}
}

func (n *testNetwork) path() string { return n.ns.Path }

func (n *testNetwork) Setup(ctx context.Context, id string, ports []workload.PortMapping) (NetConfig, error) {
	n.mu.Lock()
	n.next++
	i := n.next
	tap := fmt.Sprintf("tapt%d", i)
	n.taps[id] = tap
	n.mu.Unlock()
	guest := netip.AddrFrom4([4]byte{10, 63, byte(i % 250), 1})
	tapIP := netip.AddrFrom4([4]byte{10, 63, byte(i % 250), 2})
	err := n.ns.Do(func() error {
		la := netlink.NewLinkAttrs()
		la.Name = tap
		if err := netlink.LinkAdd(&netlink.Tuntap{LinkAttrs: la, Mode: netlink.TUNTAP_MODE_TAP, Flags: netlink.TUNTAP_NO_PI}); err != nil {
			return fmt.Errorf("creating tap %s: %w", tap, err)
		}
		l, err := netlink.LinkByName(tap)
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: tapIP.AsSlice(), Mask: net.CIDRMask(30, 32)}}); err != nil {
			return fmt.Errorf("adding address to %s: %w", tap, err)
		}
		return netlink.LinkSetUp(l)
	})
	if err != nil {
		return NetConfig{}, err
	}
	return NetConfig{Tap: tap, GuestIP: guest, TapIP: tapIP, PrefixLen: 30, Ports: ports, Netns: n.path()}, nil
}

func (n *testNetwork) Teardown(ctx context.Context, id string) error {
	n.mu.Lock()
	tap, ok := n.taps[id]
	delete(n.taps, id)
	n.mu.Unlock()
	if !ok {
		return nil
	}
	return n.delTap(tap)
}

func (n *testNetwork) delTap(tap string) error {
	return n.ns.Do(func() error {
		l, err := netlink.LinkByName(tap)
		if err != nil {
			return nil
		}
		return netlink.LinkDel(l)
	})
}

func (n *testNetwork) Reconcile(ctx context.Context, owned []string) error {
	keep := map[string]bool{}
	for _, id := range owned {
		keep[id] = true
	}
	n.mu.Lock()
	var drop []string
	for id, tap := range n.taps {
		if !keep[id] {
			drop = append(drop, tap)
			delete(n.taps, id)
		}
	}
	n.mu.Unlock()
	for _, tap := range drop {
		if err := n.delTap(tap); err != nil {
			return err
		}
	}
	return nil
}

// links lists the TAPs in the namespace.
func (n *testNetwork) links(t testing.TB) []string {
	t.Helper()
	var names []string
	err := n.ns.Do(func() error {
		ls, err := netlink.LinkList()
		for _, l := range ls {
			if strings.HasPrefix(l.Attrs().Name, "tapt") {
				names = append(names, l.Attrs().Name)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// client returns an HTTP client whose connections are made inside the
// namespace.
func (n *testNetwork) client() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := n.ns.Do(func() error {
				var d net.Dialer
				var err error
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
}

func runCmd(name string, args ...string) ([]byte, error) {
	return osexec.Command(name, args...).CombinedOutput()
}
