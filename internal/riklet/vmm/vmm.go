// Package vmm declares what the Function runtime needs from a virtual
// machine monitor (drivers in vmm/qemu and vmm/firecracker) and the process
// helpers they share: VMs run detached in their own session so that they
// survive a riklet restart, and are found again by pid and start time.
package vmm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/rik-org/rik/internal/procfs"
	"github.com/rik-org/rik/internal/riklet/cgroups"
)

// Config describes one microVM.
type Config struct {
	ID         string           // instance id; must appear in the VMM's command line
	Dir        string           // per-instance directory (sockets, logs)
	Kernel     string           // kernel image (bzImage or PVH/ELF vmlinux)
	Initrd     string           // optional initramfs
	Cmdline    string           // kernel command line (drivers may add to it)
	RootDisk   string           // raw ext4 image, the guest's /dev/vda
	Tap        string           // host TAP device name; "" = no network
	MAC        net.HardwareAddr // guest MAC
	VCPUs      int              // default 1
	MemoryMiB  int              // default 128
	ConsoleLog string           // file the guest console is appended to
	Netns      string           // optional: path of a network namespace to run the VMM in
	// TapNetns, when set, is the network namespace holding Tap, which the
	// VMM gets as a file descriptor without entering that namespace
	// (drivers that open the TAP themselves run in it instead).
	TapNetns string

	// UID and GID the VMM runs as; 0 is root. Drivers that cannot run
	// unprivileged ignore them (see the driver's documentation).
	UID, GID uint32
	Cgroup   string // cgroup (package cgroups path) the VMM starts in; "" = the riklet's
}

// Process identifies a running VMM process; it is persisted (vm.json) and
// found again after a riklet restart.
type Process struct {
	Driver    string `json:"driver"`
	Pid       int    `json:"pid"`
	StartTime uint64 `json:"startTime"` // /proc/<pid>/stat field 22, against pid reuse
}

// Driver starts and stops VMs of one VMM.
type Driver interface {
	Name() string
	// Start launches the VM detached and returns once the VMM runs.
	Start(ctx context.Context, cfg Config) (Process, error)
	// Shutdown asks the guest to power off; it does not wait.
	Shutdown(ctx context.Context, cfg Config, p Process) error
}

// ErrNoProcess: the process is gone (or the pid was reused).
var ErrNoProcess = errors.New("vmm process not running")

// Launch says how StartDetached starts a VMM process.
type Launch struct {
	Argv    []string
	LogPath string     // stdout and stderr are appended here
	Netns   string     // path of the network namespace to start in; "" = the riklet's
	Cgroup  string     // cgroup (package cgroups path) to start in; "" = the riklet's
	UID     uint32     // with GID: the user to run as; 0 is root
	GID     uint32     //
	Groups  []uint32   // supplementary groups, for a non-root UID
	Files   []*os.File // become file descriptors 3, 4, ... of the process
}

// StartDetached starts l.Argv in its own session, as l says. The child is
// reaped by a goroutine; use Watch to learn when it exits.
func StartDetached(l Launch) (Process, error) {
	if len(l.Argv) == 0 {
		return Process{}, errors.New("empty command")
	}
	logf, err := os.OpenFile(l.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return Process{}, fmt.Errorf("opening %s: %w", l.LogPath, err)
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return Process{}, err
	}
	defer devnull.Close()
	cmd := exec.Command(l.Argv[0], l.Argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, logf, logf
	cmd.ExtraFiles = l.Files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if l.UID != 0 || l.GID != 0 {
		// No passwd entry is needed: the ids are set before exec.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: l.UID, Gid: l.GID, Groups: l.Groups}
	}
	if err := startIn(cmd, l.Netns, l.Cgroup); err != nil {
		return Process{}, fmt.Errorf("starting %s: %w", l.Argv[0], err)
	}
	// Read the start time before reaping: a process that already exited is
	// a zombie until then, and its /proc entry still readable.
	st, err := StartTime(cmd.Process.Pid)
	go cmd.Wait() //nolint:errcheck // reaps; exits are seen through Watch
	if err != nil {
		return Process{}, fmt.Errorf("reading start time of %s: %w", l.Argv[0], err)
	}
	return Process{Pid: cmd.Process.Pid, StartTime: st}, nil
}

// startIn starts cmd inside netns and cgroup (each if set), from a thread
// that entered them and is thrown away afterwards.
func startIn(cmd *exec.Cmd, netns, cgroup string) error {
	if netns == "" && cgroup == "" {
		return cmd.Start()
	}
	return cgroups.OnThrowawayThread(func() error {
		if netns != "" {
			if err := enterNetns(netns); err != nil {
				return err
			}
		}
		if cgroup != "" {
			done, err := cgroups.Enter(cgroup, cmd.SysProcAttr)
			if err != nil {
				return err
			}
			defer done()
		}
		return cmd.Start()
	})
}

// enterNetns moves the calling (locked, thrown-away) thread into the
// network namespace at path.
func enterNetns(path string) error {
	h, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("opening netns %s: %w", path, err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		return fmt.Errorf("entering netns %s: %w", path, err)
	}
	return nil
}

// StartTime returns the start time (clock ticks since boot) of pid.
func StartTime(pid int) (uint64, error) {
	st, err := procfs.ReadStat(pid)
	return st.StartTime, err
}

// SessionLeader reports whether pid leads its own session, as every VMM
// StartDetached starts does (and a shell's tail or less does not).
func SessionLeader(pid int) bool {
	st, err := procfs.ReadStat(pid)
	return err == nil && st.Session == pid
}

// Alive reports whether p still runs (and is not a zombie). A process
// without a start time is never p.
func Alive(p Process) bool {
	return p.StartTime != 0 && procfs.Alive(p.Pid, p.StartTime)
}

// CmdlineContains reports whether pid's command line contains s.
func CmdlineContains(pid int, s string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), s)
}

// Signal sends sig to p if it is still the same process.
func Signal(p Process, sig syscall.Signal) error {
	if !Alive(p) {
		return ErrNoProcess
	}
	if err := unix.Kill(p.Pid, sig); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return ErrNoProcess
		}
		return fmt.Errorf("signalling pid %d: %w", p.Pid, err)
	}
	return nil
}

// Watch blocks until p exits or ctx is done.
func Watch(ctx context.Context, p Process) error {
	if !Alive(p) {
		return nil
	}
	return procfs.Watch(ctx, p.Pid, p.StartTime)
}

// WaitGone waits up to d for p to exit; it reports whether it did.
func WaitGone(ctx context.Context, p Process, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return Watch(ctx, p) == nil
}

// KVMUsable reports whether hardware KVM is there: /dev/kvm opens for
// reading and writing and the CPU has VMX or SVM. (Some sandboxes expose a
// /dev/kvm backed by a software module, kvm-pvm, that cannot boot a stock
// kernel: TCG is the safe choice there.)
func KVMUsable() bool {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	b, err := os.ReadFile("/proc/cpuinfo")
	return err == nil && HasVirtFlag(string(b))
}

// HasVirtFlag reports whether the flags of a /proc/cpuinfo text have VMX
// or SVM (hardware virtualization).
func HasVirtFlag(cpuinfo string) bool {
	for _, line := range strings.Split(cpuinfo, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(k) != "flags" {
			continue
		}
		for _, f := range strings.Fields(v) {
			if f == "vmx" || f == "svm" {
				return true
			}
		}
		return false
	}
	return false
}

// HostKHz returns the host CPU frequency in kHz from /proc/cpuinfo, or 0.
func HostKHz() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return parseCPUInfoKHz(string(b))
}

func parseCPUInfoKHz(cpuinfo string) int {
	for _, line := range strings.Split(cpuinfo, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(k) != "cpu MHz" {
			continue
		}
		mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || mhz <= 0 {
			return 0
		}
		return int(mhz * 1000)
	}
	return 0
}
