// Package qemu runs Function microVMs with QEMU's microvm machine: KVM when
// /dev/kvm is usable, else TCG (with the tsc_early_khz hint the guest needs
// to boot without a long calibration). Graceful stop goes through QMP
// (system_powerdown, the ACPI power button).
//
// QEMU can run as an unprivileged user (vmm.Config.UID): it opens nothing
// by path. The riklet hands it the TAP it prepared (so QEMU needs no
// CAP_NET_ADMIN), the listening QMP socket, the disk and console (through
// fd sets) and the kernel and initramfs (through /proc/self/fd, so those
// must be readable by everyone).
package qemu

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rik-org/rik/internal/riklet/vmm"
)

// Driver starts VMs with qemu-system-x86_64.
type Driver struct {
	Binary  string // qemu-system-x86_64
	Accel   string // "kvm" or "tcg"; "" = kvm if usable, else tcg
	HostKHz int    // TSC hint under TCG; 0 = read /proc/cpuinfo
	// NoSandbox drops QEMU's seccomp sandbox (-sandbox on,...), for QEMU
	// builds without seccomp support.
	NoSandbox bool
}

// Name implements vmm.Driver.
func (d *Driver) Name() string { return "qemu" }

func (d *Driver) accel() string {
	if d.Accel != "" {
		return d.Accel
	}
	if vmm.KVMUsable() {
		return "kvm"
	}
	return "tcg"
}

// QMPSocket is where the driver puts the VM's QMP socket.
func QMPSocket(dir string) string { return filepath.Join(dir, "qmp.sock") }

// fds says which file descriptor QEMU gets each file on (0: none). QEMU
// opens nothing by path: it gets its TAP, QMP socket, disk, console and
// boot files from the riklet, so that it can run as an unprivileged user
// that can reach none of the riklet's files.
type fds struct {
	Tap, QMP, Disk, DiskRO, Console, Kernel, Initrd int
}

// layout assigns file descriptors from 3 on, in ExtraFiles order.
func layout(cfg vmm.Config) fds {
	next := 3
	fd := func() int { next++; return next - 1 }
	var f fds
	if cfg.Tap != "" {
		f.Tap = fd()
	}
	f.QMP, f.Disk, f.DiskRO, f.Console, f.Kernel = fd(), fd(), fd(), fd(), fd()
	if cfg.Initrd != "" {
		f.Initrd = fd()
	}
	return f
}

// Args returns the QEMU command line for cfg (no I/O). Files come as the
// file descriptors of layout(cfg): disk and console through fd sets
// (QEMU dups them, no permission check), kernel and initrd through
// /proc/self/fd (re-opened: they must be readable by the VM's user).
func Args(binary, accel string, hostKHz int, sandbox bool, cfg vmm.Config) []string {
	vcpus, mem := cfg.VCPUs, cfg.MemoryMiB
	if vcpus <= 0 {
		vcpus = 1
	}
	if mem <= 0 {
		mem = 128
	}
	cmdline := cfg.Cmdline
	cpu := "host"
	if accel == "tcg" {
		cpu = "max"
		if hostKHz > 0 && !strings.Contains(cmdline, "tsc_early_khz=") {
			cmdline = strings.TrimSpace(cmdline + " tsc_early_khz=" + strconv.Itoa(hostKHz))
		}
		// Bound the translation cache (1 GiB by default), which counts in
		// the VM's memory cgroup.
		accel += ",tb-size=" + strconv.Itoa(TCGCacheMiB)
	}
	f := layout(cfg)
	fdPath := func(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }
	args := []string{binary,
		"-name", "rik-" + cfg.ID,
		"-M", "microvm,acpi=on",
		"-accel", accel,
		"-cpu", cpu,
		"-smp", strconv.Itoa(vcpus),
		"-m", strconv.Itoa(mem),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", fdPath(f.Kernel),
	}
	if sandbox {
		args = append(args, "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny")
	}
	if cfg.Initrd != "" {
		args = append(args, "-initrd", fdPath(f.Initrd))
	}
	args = append(args,
		"-append", cmdline,
		// opaque only describes a file (and names the instance's directory
		// in the command line, where Recover looks for stray VMs).
		"-add-fd", fmt.Sprintf("fd=%d,set=1,opaque=%s", f.Console, escapeOpt(cfg.ConsoleLog)),
		"-chardev", "file,id=con,append=on,path=/dev/fdset/1",
		"-serial", "chardev:con",
		// Disks are opened read-only to probe, then read-write.
		"-add-fd", fmt.Sprintf("fd=%d,set=2,opaque=%s", f.Disk, escapeOpt(cfg.RootDisk)),
		"-add-fd", fmt.Sprintf("fd=%d,set=2,opaque=%s", f.DiskRO, escapeOpt(cfg.RootDisk)),
		"-drive", "id=root,format=raw,if=none,file=/dev/fdset/2",
		"-device", "virtio-blk-device,drive=root",
		"-chardev", fmt.Sprintf("socket,id=qmp,fd=%d,server=on,wait=off", f.QMP),
		"-mon", "chardev=qmp,mode=control",
	)
	if cfg.Tap != "" {
		args = append(args,
			"-netdev", fmt.Sprintf("tap,id=net0,fd=%d", f.Tap),
			"-device", "virtio-net-device,netdev=net0,mac="+cfg.MAC.String())
	}
	return args
}

// escapeOpt escapes commas in a QEMU option value.
func escapeOpt(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// TCGCacheMiB is the size of QEMU's translation cache under TCG.
const TCGCacheMiB = 64

// files opens what QEMU gets, in layout order. The QMP socket is made
// (and left) at QMPSocket(cfg.Dir), owned by the riklet: only it can
// connect. Close the files once QEMU started.
func files(cfg vmm.Config) (fs []*os.File, err error) {
	f := layout(cfg)
	n := f.Kernel - 2
	if f.Initrd != 0 {
		n = f.Initrd - 2
	}
	fs = make([]*os.File, n)
	defer func() {
		if err != nil {
			closeAll(fs)
		}
	}()
	set := func(fd int, file *os.File, err error) error {
		if err == nil {
			fs[fd-3] = file
		}
		return err
	}
	if cfg.Tap != "" {
		t, err := vmm.OpenTap(cfg.Tap, cmp.Or(cfg.TapNetns, cfg.Netns))
		if err := set(f.Tap, t, err); err != nil {
			return nil, err
		}
	}
	q, err := listenQMP(QMPSocket(cfg.Dir))
	if err := set(f.QMP, q, err); err != nil {
		return nil, err
	}
	for _, o := range []struct {
		fd   int
		path string
		flag int
	}{
		{f.Disk, cfg.RootDisk, os.O_RDWR},
		{f.DiskRO, cfg.RootDisk, os.O_RDONLY},
		{f.Console, cfg.ConsoleLog, os.O_WRONLY | os.O_APPEND | os.O_CREATE},
		{f.Kernel, cfg.Kernel, os.O_RDONLY},
		{f.Initrd, cfg.Initrd, os.O_RDONLY},
	} {
		if o.fd == 0 {
			continue
		}
		file, err := os.OpenFile(o.path, o.flag, 0o600)
		if err := set(o.fd, file, err); err != nil {
			return nil, fmt.Errorf("opening %s: %w", o.path, err)
		}
	}
	return fs, nil
}

// listenQMP makes the QMP socket at path and returns its listening file.
func listenQMP(path string) (*os.File, error) {
	_ = os.Remove(path) // of an earlier run
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("making QMP socket: %w", err)
	}
	l.SetUnlinkOnClose(false) // the socket stays for QEMU
	defer l.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("making QMP socket: %w", err)
	}
	f, err := l.File()
	if err != nil {
		return nil, fmt.Errorf("making QMP socket: %w", err)
	}
	return f, nil
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}

// kvmGroups returns the supplementary group a non-root QEMU needs to open
// /dev/kvm, or an error when it cannot.
func kvmGroups() ([]uint32, error) {
	fi, err := os.Stat("/dev/kvm")
	if err != nil {
		return nil, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, fmt.Errorf("/dev/kvm: no owner")
	}
	return KVMAccess(fi.Mode().Perm(), st.Gid)
}

// KVMAccess tells which group an unprivileged QEMU needs to open a
// /dev/kvm of mode and group gid: one open to everyone needs none; one
// open to its group, that group; else an unprivileged QEMU cannot use it.
func KVMAccess(mode os.FileMode, gid uint32) ([]uint32, error) {
	switch {
	case mode&0o006 == 0o006:
		return nil, nil
	case mode&0o060 == 0o060:
		return []uint32{gid}, nil
	}
	return nil, fmt.Errorf("/dev/kvm (mode %v) is open to neither its group nor others: an unprivileged QEMU cannot use it", mode)
}

// Start implements vmm.Driver. QEMU runs as cfg.UID/GID, in cfg.Cgroup,
// with every file handed over (see Args).
func (d *Driver) Start(ctx context.Context, cfg vmm.Config) (vmm.Process, error) {
	accel := d.accel()
	khz := d.HostKHz
	if khz == 0 && accel == "tcg" {
		khz = vmm.HostKHz()
	}
	var groups []uint32
	if accel == "kvm" && cfg.UID != 0 {
		var err error
		if groups, err = kvmGroups(); err != nil {
			return vmm.Process{}, fmt.Errorf("starting qemu: %w", err)
		}
	}
	fs, err := files(cfg)
	if err != nil {
		return vmm.Process{}, fmt.Errorf("starting qemu: %w", err)
	}
	defer closeAll(fs) // QEMU has its copies
	log := filepath.Join(cfg.Dir, "vmm.log")
	p, err := vmm.StartDetached(vmm.Launch{
		Argv: Args(d.Binary, accel, khz, !d.NoSandbox, cfg), LogPath: log, Netns: cfg.Netns,
		Cgroup: cfg.Cgroup, UID: cfg.UID, GID: cfg.GID, Groups: groups, Files: fs,
	})
	if err != nil {
		return vmm.Process{}, fmt.Errorf("starting qemu: %w", err)
	}
	p.Driver = d.Name()
	// QEMU answers on QMP once its devices are set up: wait for it so that
	// an early failure (bad tap, bad disk) is reported by Start.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if !vmm.Alive(p) {
			return vmm.Process{}, fmt.Errorf("qemu exited at start: %s", lastLines(log, 5))
		}
		qctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		err := QMP(qctx, QMPSocket(cfg.Dir), "query-status")
		cancel()
		if err == nil {
			return p, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = vmm.Signal(p, 9)
			return vmm.Process{}, fmt.Errorf("qemu did not answer on QMP in time: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Shutdown implements vmm.Driver: QMP system_powerdown.
func (d *Driver) Shutdown(ctx context.Context, cfg vmm.Config, p vmm.Process) error {
	return QMP(ctx, QMPSocket(cfg.Dir), "system_powerdown")
}

// QMP runs one command on the QMP socket at sock.
func QMP(ctx context.Context, sock, command string) error {
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "unix", sock)
	if err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	defer c.Close()
	deadline := time.Now().Add(5 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.SetDeadline(deadline)
	r := bufio.NewReader(c)
	if _, err := r.ReadBytes('\n'); err != nil { // greeting
		return fmt.Errorf("qmp greeting: %w", err)
	}
	for _, cmd := range []string{"qmp_capabilities", command} {
		if err := json.NewEncoder(c).Encode(map[string]string{"execute": cmd}); err != nil {
			return fmt.Errorf("qmp %s: %w", cmd, err)
		}
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return fmt.Errorf("qmp %s: %w", cmd, err)
			}
			var resp struct {
				Return json.RawMessage `json:"return"`
				Error  *struct {
					Desc string `json:"desc"`
				} `json:"error"`
			}
			if json.Unmarshal(line, &resp) != nil {
				continue
			}
			if resp.Error != nil {
				return fmt.Errorf("qmp %s: %s", cmd, resp.Error.Desc)
			}
			if resp.Return != nil {
				break
			}
			// an event: keep reading
		}
	}
	return nil
}

func lastLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}
