package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rik-org/rik/internal/riklet/vmm"
)

func cfg() vmm.Config {
	return vmm.Config{
		ID: "id-1", Dir: "/s/fn/id-1", Kernel: "/k/vmlinux", Initrd: "/k/initrd", Cmdline: "console=ttyS0 quiet",
		RootDisk: "/s/fn/id-1/rootfs.ext4", Tap: "rik1a2b", MAC: net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1},
		VCPUs: 2, MemoryMiB: 256, ConsoleLog: "/s/fn/id-1/console.log",
	}
}

// opt returns the value following flag in args ("" if absent).
func opt(args []string, flag string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			return args[i+1]
		}
	}
	return ""
}

func TestArgs(t *testing.T) {
	tests := []struct {
		name   string
		accel  string
		mutate func(*vmm.Config)
		check  func(t *testing.T, a []string)
	}{
		{"tcg", "tcg", nil, func(t *testing.T, a []string) {
			if !strings.HasPrefix(opt(a, "-accel"), "tcg,") || opt(a, "-cpu") != "max" {
				t.Errorf("accel/cpu = %s/%s", opt(a, "-accel"), opt(a, "-cpu"))
			}
			if opt(a, "-append") != "console=ttyS0 quiet tsc_early_khz=2600000" {
				t.Errorf("append = %q", opt(a, "-append"))
			}
		}},
		{"kvm", "kvm", nil, func(t *testing.T, a []string) {
			if opt(a, "-accel") != "kvm" || opt(a, "-cpu") != "host" || strings.Contains(opt(a, "-append"), "tsc_early_khz") {
				t.Errorf("kvm args wrong: %q", a)
			}
		}},
		{"machine and resources", "tcg", nil, func(t *testing.T, a []string) {
			if opt(a, "-M") != "microvm,acpi=on" || opt(a, "-smp") != "2" || opt(a, "-m") != "256" {
				t.Errorf("machine args: %q", a)
			}
			if opt(a, "-name") != "rik-id-1" || a[0] != "qemu-system-x86_64" {
				t.Errorf("name/binary: %q", a)
			}
			if !strings.Contains(strings.Join(a, " "), "-no-reboot") || !strings.Contains(strings.Join(a, " "), "-nodefaults") {
				t.Errorf("missing -no-reboot/-nodefaults: %q", a)
			}
			if !strings.Contains(strings.Join(a, " "), "virtio-net-device,netdev=net0,mac=52:54:00:00:00:01") {
				t.Errorf("nic: %q", a)
			}
		}},
		{"every file by descriptor", "tcg", nil, func(t *testing.T, a []string) {
			joined := strings.Join(a, " ")
			for _, want := range []string{
				"-netdev tap,id=net0,fd=3",
				"-chardev socket,id=qmp,fd=4,server=on,wait=off -mon chardev=qmp,mode=control",
				"-add-fd fd=5,set=2,opaque=/s/fn/id-1/rootfs.ext4 -add-fd fd=6,set=2,opaque=/s/fn/id-1/rootfs.ext4 -drive id=root,format=raw,if=none,file=/dev/fdset/2",
				"-add-fd fd=7,set=1,opaque=/s/fn/id-1/console.log -chardev file,id=con,append=on,path=/dev/fdset/1 -serial chardev:con",
				"-kernel /proc/self/fd/8", "-initrd /proc/self/fd/9",
			} {
				if !strings.Contains(joined, want) {
					t.Errorf("args lack %q:\n%s", want, joined)
				}
			}
			if strings.Contains(joined, "/k/") {
				t.Errorf("args name the kernel's path: %s", joined)
			}
		}},
		{"comma in a described path is escaped", "tcg", func(c *vmm.Config) { c.RootDisk = "/a,b/disk" }, func(t *testing.T, a []string) {
			if !slices.Contains(a, "fd=5,set=2,opaque=/a,,b/disk") {
				t.Errorf("args = %q", a)
			}
		}},
		{"tcg cache bounded", "tcg", nil, func(t *testing.T, a []string) {
			if opt(a, "-accel") != "tcg,tb-size=64" {
				t.Errorf("accel = %q", opt(a, "-accel"))
			}
		}},
		{"sandbox", "tcg", nil, func(t *testing.T, a []string) {
			if !strings.HasPrefix(opt(a, "-sandbox"), "on,") || !strings.Contains(opt(a, "-sandbox"), "spawn=deny") {
				t.Errorf("sandbox = %q", opt(a, "-sandbox"))
			}
		}},
		{"defaults, no tap, no initrd", "tcg", func(c *vmm.Config) { c.VCPUs, c.MemoryMiB, c.Tap, c.Initrd = 0, 0, "", "" }, func(t *testing.T, a []string) {
			if opt(a, "-smp") != "1" || opt(a, "-m") != "128" || opt(a, "-netdev") != "" || opt(a, "-initrd") != "" {
				t.Errorf("defaults: %q", a)
			}
			if opt(a, "-kernel") != "/proc/self/fd/7" || !strings.Contains(strings.Join(a, " "), "socket,id=qmp,fd=3,") {
				t.Errorf("fds without tap: %q", a)
			}
		}},
		{"tsc hint given by user kept", "tcg", func(c *vmm.Config) { c.Cmdline = "tsc_early_khz=1000" }, func(t *testing.T, a []string) {
			if opt(a, "-append") != "tsc_early_khz=1000" {
				t.Errorf("append = %q", opt(a, "-append"))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cfg()
			if tt.mutate != nil {
				tt.mutate(&c)
			}
			tt.check(t, Args("qemu-system-x86_64", tt.accel, 2600000, true, c))
		})
	}
}

// fakeQMP serves one QMP connection: greeting, then answers commands; it
// fails the command named failCmd and sends an event before each answer.
func fakeQMP(t *testing.T, sock, failCmd string) <-chan []string {
	t.Helper()
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []string, 1)
	go func() {
		defer l.Close()
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintln(c, `{"QMP": {"version": {}, "capabilities": []}}`)
		var cmds []string
		defer func() { got <- cmds }()
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			var req struct {
				Execute string `json:"execute"`
			}
			if json.Unmarshal(sc.Bytes(), &req) != nil {
				return
			}
			cmds = append(cmds, req.Execute)
			fmt.Fprintln(c, `{"event": "SOMETHING", "data": {}}`)
			if req.Execute == failCmd {
				fmt.Fprintln(c, `{"error": {"class": "GenericError", "desc": "nope"}}`)
			} else {
				fmt.Fprintln(c, `{"return": {}}`)
			}
		}
	}()
	return got
}

func TestArgsNoSandbox(t *testing.T) {
	if a := Args("q", "tcg", 0, false, cfg()); opt(a, "-sandbox") != "" {
		t.Errorf("sandbox present: %q", a)
	}
	if a := Args("q", "tcg", 0, false, cfg()); strings.Contains(opt(a, "-append"), "tsc_early_khz") {
		t.Errorf("tsc hint without a known frequency: %q", opt(a, "-append"))
	}
}

func TestQMP(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "qmp.sock")
	got := fakeQMP(t, sock, "")
	if err := (&Driver{}).Shutdown(context.Background(), vmm.Config{Dir: dir}, vmm.Process{}); err != nil {
		t.Fatal(err)
	}
	if cmds := <-got; strings.Join(cmds, ",") != "qmp_capabilities,system_powerdown" {
		t.Errorf("commands = %v", cmds)
	}

	sock2 := filepath.Join(dir, "qmp2.sock")
	fakeQMP(t, sock2, "system_powerdown")
	if err := QMP(context.Background(), sock2, "system_powerdown"); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("err = %v, want the QMP error", err)
	}
	if err := QMP(context.Background(), filepath.Join(dir, "none.sock"), "quit"); err == nil {
		t.Errorf("QMP on a missing socket succeeded")
	}
}

func TestLayout(t *testing.T) {
	c := cfg()
	if got, want := layout(c), (fds{Tap: 3, QMP: 4, Disk: 5, DiskRO: 6, Console: 7, Kernel: 8, Initrd: 9}); got != want {
		t.Errorf("layout = %+v, want %+v", got, want)
	}
	c.Tap, c.Initrd = "", ""
	if got, want := layout(c), (fds{QMP: 3, Disk: 4, DiskRO: 5, Console: 6, Kernel: 7}); got != want {
		t.Errorf("layout without tap and initrd = %+v, want %+v", got, want)
	}
}

// TestFiles opens what QEMU gets: each file on its descriptor, the QMP
// socket listening and private to root.
func TestFiles(t *testing.T) {
	dir := t.TempDir()
	c := vmm.Config{ID: "x", Dir: dir, Kernel: filepath.Join(dir, "k"), RootDisk: filepath.Join(dir, "disk"), ConsoleLog: filepath.Join(dir, "console.log")}
	for _, p := range []string{c.Kernel, c.RootDisk} {
		if err := os.WriteFile(p, []byte(p), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	fs, err := files(c)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(fs)
	l := layout(c)
	if len(fs) != l.Kernel-2 {
		t.Fatalf("%d files, want %d", len(fs), l.Kernel-2)
	}
	for fd, want := range map[int]string{l.Disk: c.RootDisk, l.DiskRO: c.RootDisk, l.Console: c.ConsoleLog, l.Kernel: c.Kernel} {
		if fs[fd-3].Name() != want {
			t.Errorf("fd %d is %s, want %s", fd, fs[fd-3].Name(), want)
		}
	}
	if fi, err := os.Stat(QMPSocket(dir)); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("QMP socket: %v, %v; want a 0600 socket", fi, err)
	}
	conn, err := net.Dial("unix", QMPSocket(dir)) // the listener is there, held by the file
	if err != nil {
		t.Errorf("QMP socket does not listen: %v", err)
	} else {
		conn.Close()
	}
	c.RootDisk = filepath.Join(dir, "missing")
	if _, err := files(c); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("files with a missing disk = %v", err)
	}
}

func TestKVMAccess(t *testing.T) {
	tests := []struct {
		mode   os.FileMode
		groups []uint32
		err    bool
	}{
		{0o666, nil, false},
		{0o660, []uint32{108}, false},
		{0o664, []uint32{108}, false},
		{0o600, nil, true},
		{0o640, nil, true},
	}
	for _, tt := range tests {
		got, err := KVMAccess(tt.mode, 108)
		if (err != nil) != tt.err || !slices.Equal(got, tt.groups) {
			t.Errorf("KVMAccess(%v) = %v, %v; want %v (error %v)", tt.mode, got, err, tt.groups, tt.err)
		}
	}
}
