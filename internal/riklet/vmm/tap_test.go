package vmm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rik-org/rik/internal/riklet/cgroups"
	"github.com/rik-org/rik/internal/testutil"
	"github.com/rik-org/rik/internal/testutil/netns"
)

func TestRootOpenTap(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "ip")
	ns := netns.New(t)
	ns.Run(t, "ip", "tuntap", "add", "dev", "tapx", "mode", "tap")
	f, err := OpenTap("tapx", ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	// One queue: a second opener is refused while the VMM holds it.
	if g, err := OpenTap("tapx", ns.Path); err == nil || !errors.Is(err, unix.EBUSY) {
		if g != nil {
			g.Close()
		}
		t.Errorf("second OpenTap = %v, want EBUSY", err)
	}
	ifr, _ := unix.NewIfreq("")
	if err := unix.IoctlIfreq(int(f.Fd()), unix.TUNGETIFF, ifr); err != nil || ifr.Name() != "tapx" ||
		ifr.Uint16()&(unix.IFF_TAP|unix.IFF_NO_PI|unix.IFF_VNET_HDR) != unix.IFF_TAP|unix.IFF_NO_PI|unix.IFF_VNET_HDR {
		t.Errorf("attached to %q flags %#x, %v", ifr.Name(), ifr.Uint16(), err)
	}
	f.Close()
	if !slices.Contains(ns.Links(t), "tapx") {
		t.Error("the tap went with its file")
	}
	// A missing device is an error, and none is left made.
	if g, err := OpenTap("nosuch", ns.Path); err == nil {
		g.Close()
		t.Error("OpenTap of a missing device succeeded")
	}
	if slices.Contains(ns.Links(t), "nosuch") {
		t.Error("OpenTap made a device")
	}
	if _, err := OpenTap("tapx", "/nonexistent/netns"); err == nil {
		t.Error("OpenTap in a missing netns succeeded")
	}
}

// TestRootStartDetachedConfined starts a process as another user, with a
// file, in a cgroup and a network namespace, and checks each.
func TestRootStartDetachedConfined(t *testing.T) {
	testutil.RequireRoot(t)
	ns := netns.New(t)
	dir := t.TempDir()
	cg := "rik-test-vmm-" + strconv.Itoa(os.Getpid()) + "/vm"
	t.Cleanup(func() { cgroups.Remove(filepath.Dir(cg)) })
	if err := cgroups.Create(cg, cgroups.Limits{MemoryBytes: 64 << 20, Pids: 16}); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("handed over\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(secret)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	log := filepath.Join(dir, "out.log")
	// The process reads the root-only file through fd 3 only.
	p, err := StartDetached(Launch{
		Argv:    []string{"/bin/sh", "-c", `cat <&3; cat ` + secret + ` || echo denied; exec sleep 60`},
		LogPath: log, Netns: ns.Path, Cgroup: cg, UID: 2000000007, GID: 2000000008, Groups: []uint32{2000000009},
		Files: []*os.File{f},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer Signal(p, syscall.SIGKILL)
	testutil.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(log)
		return strings.Contains(string(b), "denied")
	}, func() string { b, _ := os.ReadFile(log); return "log: " + string(b) })
	if b, _ := os.ReadFile(log); !strings.HasPrefix(string(b), "handed over\n") {
		t.Errorf("log = %q, want the handed-over file first", b)
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid))
	for _, want := range []string{"Uid:\t2000000007\t2000000007\t2000000007\t2000000007\n", "Gid:\t2000000008\t", "Groups:\t2000000009 \n"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("status lacks %q:\n%s", want, status)
		}
	}
	if !slices.Contains(cgroups.Procs(cg), p.Pid) {
		t.Errorf("pid %d not in cgroup %s (%v)", p.Pid, cg, cgroups.Procs(cg))
	}
	want, err1 := os.Stat(ns.Path)
	got, err2 := os.Stat(fmt.Sprintf("/proc/%d/ns/net", p.Pid))
	if err1 != nil || err2 != nil || !os.SameFile(want, got) {
		t.Errorf("process not in the test's netns: %v %v", err1, err2)
	}
}
