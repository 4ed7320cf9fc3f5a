package doctor

import (
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"

	"github.com/rik-org/rik/internal/riklet/cgroups"
	"github.com/rik-org/rik/internal/riklet/vmm"
	"github.com/rik-org/rik/internal/riklet/vmm/qemu"
)

// rel turns an absolute path into one of Host.FS.
func rel(p string) string {
	if r := strings.TrimPrefix(path.Clean(p), "/"); r != "" {
		return r
	}
	return "."
}

func readFile(h Host, p string) (string, error) {
	b, err := fs.ReadFile(h.FS, rel(p))
	return string(b), err
}

func exists(h Host, p string) bool {
	_, err := fs.Stat(h.FS, rel(p))
	return err == nil
}

func checkRoot(h Host) Result {
	if h.Euid == 0 {
		return Result{Check: "root", Detail: "running as root, as the riklet does"}
	}
	return Result{Check: "root", Status: Warn,
		Detail: fmt.Sprintf("running as uid %d: the riklet runs as root, and some checks (/dev/kvm) read differently", h.Euid),
		Fix:    "sudo rik doctor"}
}

// tool is an executable and the Debian package that has it.
type tool struct{ name, pkg string }

// checkTools finds every tool on PATH.
func checkTools(h Host, check string, missing Status, why string, tools ...tool) Result {
	var found, lacking, pkgs []string
	for _, t := range tools {
		p, err := h.LookPath(t.name)
		if err != nil {
			lacking = append(lacking, t.name)
			if !slices.Contains(pkgs, t.pkg) {
				pkgs = append(pkgs, t.pkg)
			}
			continue
		}
		found = append(found, p)
	}
	if len(lacking) == 0 {
		return Result{Check: check, Detail: strings.Join(found, ", ")}
	}
	return Result{Check: check, Status: missing, Packages: pkgs, Fix: aptFix(pkgs...),
		Detail: fmt.Sprintf("%s not found on PATH (%s)", strings.Join(lacking, ", "), why)}
}

func checkForward(h Host) Result {
	v, err := readFile(h, "/proc/sys/net/ipv4/ip_forward")
	r := Result{Check: "ip_forward"}
	switch strings.TrimSpace(v) {
	case "1":
		r.Detail = "on"
	case "0":
		r.Status, r.Detail = Warn, "off: the riklet turns it on when it starts (pods and functions are routed)"
		r.Fix = "sysctl -w net.ipv4.ip_forward=1 && echo net.ipv4.ip_forward=1 > /etc/sysctl.d/90-rik.conf"
	default:
		r.Status, r.Detail = Warn, fmt.Sprintf("cannot read /proc/sys/net/ipv4/ip_forward: %v", err)
	}
	return r
}

// podControllers are the cgroup controllers pod limits use.
var podControllers = []string{"cpu", "memory", "pids"}

func checkCgroups(h Host, missing Status) Result {
	mi, err := readFile(h, "/proc/self/mountinfo")
	if err != nil {
		return Result{Check: "cgroups", Status: missing, Detail: fmt.Sprintf("cannot read /proc/self/mountinfo: %v", err)}
	}
	c := cgroups.Describe(mi, func(p string) ([]byte, error) { return fs.ReadFile(h.FS, rel(p)) })
	var kind string
	switch {
	case c.V1 && c.V2:
		kind = "v1 and v2 (hybrid)"
	case c.V2:
		kind = "v2"
	case c.V1:
		kind = "v1"
	default:
		return Result{Check: "cgroups", Status: missing, Detail: "no cgroup hierarchy mounted",
			Fix: "mount -t cgroup2 none /sys/fs/cgroup (systemd does this at boot)"}
	}
	var lacking []string
	for _, want := range podControllers {
		if !slices.Contains(c.Controllers, want) {
			lacking = append(lacking, want)
		}
	}
	if len(lacking) > 0 {
		return Result{Check: "cgroups", Status: missing,
			Detail: fmt.Sprintf("%s without the %s controller(s): pod limits cannot apply", kind, strings.Join(lacking, ", ")),
			Fix:    "enable them on the kernel command line (e.g. cgroup_enable=memory), then reboot"}
	}
	return Result{Check: "cgroups", Detail: kind + ", controllers " + strings.Join(podControllers, ", ")}
}

// kvmFix is what gives a machine hardware virtualization.
const kvmFix = "enable VT-x/AMD-V in the firmware (or nested virtualization for a VM), then modprobe kvm_intel (or kvm_amd)"

// checkKVM tells whether functions get hardware virtualization; without
// it they run under QEMU's TCG emulation, so it never fails.
func checkKVM(h Host) Result {
	r := Result{Check: "kvm", Status: Warn}
	fi, err := fs.Stat(h.FS, "dev/kvm")
	if err != nil {
		r.Detail, r.Fix = "no /dev/kvm: functions run under QEMU's emulation (TCG), slowly; Firecracker cannot run", kvmFix
		return r
	}
	cpuinfo, _ := readFile(h, "/proc/cpuinfo")
	if !vmm.HasVirtFlag(cpuinfo) {
		r.Detail = "/dev/kvm is there but the CPU shows no vmx or svm flag (a software KVM): functions use TCG"
		r.Fix = kvmFix
		return r
	}
	if err := h.OpenRW("/dev/kvm"); err != nil {
		r.Detail, r.Fix = fmt.Sprintf("cannot open /dev/kvm: %v", err), "run the riklet (and rik doctor) as root"
		return r
	}
	if _, err := qemu.KVMAccess(fi.Mode().Perm(), 0); err != nil {
		r.Detail = err.Error() + " (the riklet runs each VM as its own unprivileged user)"
		r.Fix = "chgrp kvm /dev/kvm && chmod 0660 /dev/kvm (Debian's udev rules do it: apt-get install -y udev)"
		return r
	}
	return Result{Check: "kvm", Detail: "/dev/kvm usable, hardware virtualization (vmx/svm)"}
}

func checkVMM(h Host, missing Status) Result {
	if h.Arch != "amd64" {
		return Result{Check: "vmm", Status: missing,
			Detail: fmt.Sprintf("functions need an x86_64 host (QEMU microvm, x86 guest kernel); this one is %s", h.Arch)}
	}
	var found []string
	for _, b := range []string{"qemu-system-x86_64", "firecracker"} {
		if p, err := h.LookPath(b); err == nil {
			found = append(found, p)
		}
	}
	if len(found) == 0 {
		return Result{Check: "vmm", Status: missing, Detail: "neither qemu-system-x86_64 nor firecracker on PATH: no functions",
			Fix: aptFix("qemu-system-x86"), Packages: []string{"qemu-system-x86"}}
	}
	return Result{Check: "vmm", Detail: strings.Join(found, ", ")}
}

func checkGuestKernel(h Host, o Options, missing Status) Result {
	r := Result{Check: "guest kernel"}
	if o.KernelPath != "" && o.KernelPath != "auto" {
		for _, p := range []string{o.KernelPath, o.KernelModules} {
			if p != "" && !exists(h, p) {
				r.Status, r.Detail = missing, p+" does not exist: no functions"
				return r
			}
		}
		r.Detail = o.KernelPath
		return r
	}
	k, ok := vmm.FindKernel(h.FS, o.KernelDirs)
	if !ok {
		r.Status = missing
		r.Detail = "none in " + strings.Join(o.KernelDirs, " or ") + " and no --kernel-path: no functions"
		if len(o.KernelDirs) > 0 {
			r.Fix = o.FetchKernel + " " + o.KernelDirs[0]
		}
		return r
	}
	r.Detail = k.Path
	if k.Modules != "" {
		r.Detail += ", modules " + k.Modules
	}
	return r
}

// checkInit finds rik-init, the guest's PID 1, where the riklet looks.
func checkInit(h Host, missing Status) Result {
	if p, err := h.LookPath("rik-init"); err == nil {
		return Result{Check: "rik-init", Detail: p}
	}
	if h.Executable != "" {
		if p := path.Join(path.Dir(h.Executable), "rik-init"); exists(h, p) {
			return Result{Check: "rik-init", Detail: p}
		}
	}
	return Result{Check: "rik-init", Status: missing,
		Detail: "not on PATH nor next to this binary: a distro guest kernel boots through it",
		Fix:    "install rik's package (/usr/bin/rik-init), or make build (bin/rik-init)"}
}

// Free space below which a state directory warns or fails.
const (
	diskFail = 512 << 20
	diskWarn = 2 << 30
)

func checkDisk(h Host, dir string) Result {
	r := Result{Check: "disk " + dir}
	at := dir // the nearest directory that exists
	for !exists(h, at) && at != "/" {
		at = path.Dir(at)
	}
	free, err := h.Free(at)
	if err != nil {
		r.Status, r.Detail = Warn, fmt.Sprintf("cannot read the free space of %s: %v", at, err)
		return r
	}
	r.Detail = fmt.Sprintf("%s free", bytesString(free))
	if at != dir {
		r.Detail += " (on " + at + "'s filesystem; not created yet)"
	}
	switch {
	case free < diskFail:
		r.Status = Fail
	case free < diskWarn:
		r.Status = Warn
	default:
		return r
	}
	r.Detail += fmt.Sprintf(": images, rootfs and logs need more than %s", bytesString(diskWarn))
	r.Fix = "free space on the filesystem of " + at
	return r
}

func bytesString(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}
