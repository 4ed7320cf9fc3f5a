package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
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
			if opt(a, "-accel") != "tcg" || opt(a, "-cpu") != "max" {
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
			if opt(a, "-netdev") != "tap,id=net0,script=no,downscript=no,ifname=rik1a2b" || opt(a, "-device") != "virtio-blk-device,drive=root" {
				t.Errorf("devices: %q", a)
			}
			if opt(a, "-qmp") != "unix:/s/fn/id-1/qmp.sock,server=on,wait=off" || opt(a, "-initrd") != "/k/initrd" {
				t.Errorf("qmp/initrd: %q", a)
			}
			if !strings.Contains(strings.Join(a, " "), "virtio-net-device,netdev=net0,mac=52:54:00:00:00:01") {
				t.Errorf("nic: %q", a)
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
		}},
		{"comma in path is escaped", "tcg", func(c *vmm.Config) { c.RootDisk = "/a,b/disk" }, func(t *testing.T, a []string) {
			if opt(a, "-drive") != "id=root,format=raw,if=none,file=/a,,b/disk" {
				t.Errorf("drive = %q", opt(a, "-drive"))
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
