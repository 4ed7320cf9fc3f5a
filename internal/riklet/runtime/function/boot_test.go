package function

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rik-org/rik/internal/workload"
)

func TestKernelCmdline(t *testing.T) {
	nc := NetConfig{GuestIP: netip.MustParseAddr("10.62.0.1"), TapIP: netip.MustParseAddr("10.62.0.2"), PrefixLen: 30}
	tests := []struct {
		name string
		fn   workload.Function
		net  NetConfig
		dns  []netip.Addr
		want string
	}{
		{"minimal", workload.Function{}, NetConfig{}, nil,
			"console=ttyS0 reboot=k panic=-1 quiet rik.root=/dev/vda rik.hostname=fn-1"},
		{"network, dns, entrypoint with args, kernel args",
			workload.Function{Execution: workload.Execution{Entrypoint: "/bin/httpd -f -p 80", KernelArgs: "loglevel=7"}},
			nc, []netip.Addr{netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("9.9.9.9")},
			"console=ttyS0 reboot=k panic=-1 quiet rik.root=/dev/vda rik.ip=10.62.0.1/30 rik.gw=10.62.0.2 rik.dns=1.1.1.1,9.9.9.9 rik.hostname=fn-1 rik.init=/bin/httpd loglevel=7"},
	}
	for _, tt := range tests {
		if got := kernelCmdline("fn-1", tt.fn, tt.net, tt.dns, false); got != tt.want {
			t.Errorf("%s:\n got %q\nwant %q", tt.name, got, tt.want)
		}
	}
}

func TestKernelCmdlineFirecracker(t *testing.T) {
	if got := kernelCmdline("x", workload.Function{}, NetConfig{}, nil, true); !strings.Contains(got, " rik.halt=reboot") {
		t.Errorf("cmdline %q lacks rik.halt=reboot", got)
	}
}

func TestValidateFunction(t *testing.T) {
	ok := &workload.Function{Execution: workload.Execution{Rootfs: "http://x/r.ext4"}}
	with := func(f func(*workload.Execution)) *workload.Function {
		c := *ok
		f(&c.Execution)
		return &c
	}
	tests := []struct {
		name string
		in   workloadInstance
		want string // "" = valid
	}{
		{"valid", workloadInstance{ID: "a-1", Function: ok}, ""},
		{"uuid id", workloadInstance{ID: "0f1e2d3c-aaaa-4bbb-8ccc-000000000001", Function: ok}, ""},
		{"path id", workloadInstance{ID: "../x", Function: ok}, "instance_id"},
		{"empty id", workloadInstance{ID: "", Function: ok}, "instance_id"},
		{"no function", workloadInstance{ID: "a"}, "spec.function: required"},
		{"no rootfs", workloadInstance{ID: "a", Function: with(func(e *workload.Execution) { e.Rootfs = "" })}, "spec.function.execution.rootfs: required"},
		{"relative entrypoint", workloadInstance{ID: "a", Function: with(func(e *workload.Execution) { e.Entrypoint = "init" })}, "spec.function.execution.entrypoint"},
		{"reserved kernel arg", workloadInstance{ID: "a", Function: with(func(e *workload.Execution) { e.KernelArgs = "quiet rik.ip=1.2.3.4/32" })}, "spec.function.execution.kernelArgs"},
		{"init= kernel arg", workloadInstance{ID: "a", Function: with(func(e *workload.Execution) { e.KernelArgs = "init=/bin/sh" })}, "spec.function.execution.kernelArgs"},
		{"vcpus", workloadInstance{ID: "a", Function: with(func(e *workload.Execution) { e.VCPUs = -1 })}, "spec.function.execution.vcpus"},
		{"memory", workloadInstance{ID: "a", Function: with(func(e *workload.Execution) { e.Memory = 1 << 30 })}, "spec.function.execution.memory"},
	}
	for _, tt := range tests {
		err := validateFunction(tt.in)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestGuestExitCode(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"boot\nrik-init: exit 0\n", 0, true},
		{"rik-init: exit 3\r\n[ 1.0] reboot: Power down\r\n", 3, true},
		{"rik-init: exit 1\nagain\nrik-init: exit 42\n", 42, true},
		{"rik-init: started /sbin/init\n", 0, false},
		{"rik-init: exit nope\n", 0, false},
		{"rik-init: exit 999\n", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, ok := guestExitCode([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("guestExitCode(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestMACFor(t *testing.T) {
	a, b := macFor("one"), macFor("two")
	if a.String() == b.String() || macFor("one").String() != a.String() {
		t.Errorf("macFor not stable or not distinct: %s %s", a, b)
	}
	if a[0]&1 != 0 || a[0]&2 == 0 {
		t.Errorf("mac %s is not unicast, locally administered", a)
	}
}

func TestPickDriver(t *testing.T) {
	have := func(names ...string) func(string) (string, error) {
		return func(n string) (string, error) {
			for _, h := range names {
				if h == n {
					return "/usr/bin/" + n, nil
				}
			}
			return "", errors.New("not found")
		}
	}
	base := Config{QEMUBinary: "qemu-system-x86_64", FirecrackerBinary: "firecracker"}
	tests := []struct {
		vmm     string
		kvm     bool
		path    func(string) (string, error)
		want    string
		wantErr bool
	}{
		{"auto", true, have("firecracker", "qemu-system-x86_64"), "firecracker", false},
		{"auto", false, have("firecracker", "qemu-system-x86_64"), "qemu", false},
		{"auto", true, have("qemu-system-x86_64"), "qemu", false},
		{"auto", true, have(), "", true},
		{"qemu", true, have("firecracker", "qemu-system-x86_64"), "qemu", false},
		{"qemu", false, have("firecracker"), "", true},
		{"firecracker", false, have("firecracker"), "", true},
		{"firecracker", true, have("firecracker"), "firecracker", false},
		{"xen", true, have("firecracker", "qemu-system-x86_64"), "", true},
	}
	for _, tt := range tests {
		c := base
		c.VMM = tt.vmm
		d, err := pickDriver(c, tt.kvm, tt.path)
		if tt.wantErr {
			if err == nil || !errors.Is(err, ErrNotConfigured) {
				t.Errorf("pickDriver(%s, kvm=%v) = %v, %v; want ErrNotConfigured", tt.vmm, tt.kvm, d, err)
			}
			continue
		}
		if err != nil || d.Name() != tt.want {
			t.Errorf("pickDriver(%s, kvm=%v) = %v, %v; want %s", tt.vmm, tt.kvm, d, err, tt.want)
		}
	}
}

func TestNewNotConfigured(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz")
	os.WriteFile(kernel, []byte("k"), 0o644)
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no kernel", Config{StateDir: dir}},
		{"missing kernel", Config{StateDir: dir, KernelPath: filepath.Join(dir, "nope")}},
		{"no vmm", Config{StateDir: dir, KernelPath: kernel, VMM: "qemu", QEMUBinary: filepath.Join(dir, "no-qemu")}},
		{"no init", Config{StateDir: dir, KernelPath: kernel, VMM: "qemu", QEMUBinary: "/bin/true", InitBinary: filepath.Join(dir, "no-init")}},
	}
	for _, tt := range tests {
		if _, err := New(context.Background(), tt.cfg, nil); !errors.Is(err, ErrNotConfigured) {
			t.Errorf("%s: New err = %v, want ErrNotConfigured", tt.name, err)
		}
	}
}
