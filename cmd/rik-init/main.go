//go:build linux

// Command rik-init is the PID 1 of a rik Function's microVM. It lives in an
// initramfs built by the riklet: it mounts /proc, /sys and /dev, loads the
// kernel modules listed in /rik/modules.order, configures eth0 from the
// kernel command line (rik.ip=, rik.gw=, rik.dns=) or, without rik.ip=, by
// DHCP (dhcp.go), mounts the root disk (rik.root=) and runs the entrypoint
// (rik.init=, default /sbin/init) in it, with the arguments and environment
// of the initramfs's /rik/exec.json.
// It stays PID 1: it reaps zombies, forwards a stop request (SIGTERM,
// SIGINT from Ctrl-Alt-Del, ACPI power button) to the entrypoint, and when
// the entrypoint exits prints "rik-init: exit <code>" on the console and
// powers the machine off.
//
// Build: CGO_ENABLED=0 go build -o rik-init ./cmd/rik-init
package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/rik-org/rik/internal/version"
)

const (
	modulesOrder = "/rik/modules.order"
	modulesDir   = "/lib/modules"
	newRoot      = "/newroot"
	stopGrace    = 5 * time.Second
)

func main() {
	if os.Getpid() != 1 && len(os.Args) == 2 && answerFlag(os.Args[1]) { // as PID 1, argv comes from the kernel
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "rik-init: must run as PID 1 in a rik microVM")
		os.Exit(2)
	}
	cfg, code, err := run()
	if err != nil {
		logf("%v", err)
	}
	logf("exit %d", code)
	halt(cfg.Reboot)
}

// answerFlag prints what --help or --version ask for and says whether
// arg was one of them. rik-init takes no other flag: it is the guest's
// PID 1, configured by the kernel command line.
func answerFlag(arg string) bool {
	switch arg {
	case "--version", "-v":
		fmt.Println(version.String("rik-init"))
	case "--help", "-h":
		fmt.Println("rik-init is the PID 1 of a rik Function's microVM, put in its initramfs by the riklet.\n" +
			"It takes no flags: it reads rik.ip=, rik.gw=, rik.dns=, rik.root= and rik.init= from the\n" +
			"kernel command line, mounts the root disk and runs the entrypoint.\n\n" +
			"  --help      this text\n  --version   the version")
	default:
		return false
	}
	return true
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stdout, "rik-init: "+format+"\n", args...)
}

func run() (bootConfig, int, error) {
	var cfg bootConfig
	if err := mountEarly(); err != nil {
		return cfg, 255, err
	}
	raw, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return cfg, 255, fmt.Errorf("reading /proc/cmdline: %w", err)
	}
	if cfg, err = parseCmdline(string(raw)); err != nil {
		return cfg, 255, fmt.Errorf("parsing kernel command line: %w", err)
	}
	ex, err := readExecConfig(execConfigPath) // before the initramfs goes away
	if err != nil {
		return cfg, 255, err
	}
	cfg.Args = append(cfg.Args, ex.Args...)
	cfg.Env = ex.Env
	loadModules()
	code, err := boot(cfg)
	return cfg, code, err
}

func boot(cfg bootConfig) (int, error) {
	if cfg.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
			logf("setting hostname: %v", err)
		}
	}
	if err := setupNetwork(&cfg); err != nil {
		return 255, err
	}
	if err := switchRoot(cfg); err != nil {
		return 255, err
	}
	if len(cfg.DNS) > 0 {
		writeResolvConf(cfg)
	}
	return runEntrypoint(cfg)
}

func mountEarly() error {
	for _, m := range []struct{ src, dst, fs string }{
		{"devtmpfs", "/dev", "devtmpfs"},
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", m.dst, err)
		}
		if err := unix.Mount(m.src, m.dst, m.fs, unix.MS_NOSUID|unix.MS_NOEXEC, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mounting %s: %w", m.dst, err)
		}
	}
	return nil
}

// loadModules loads, in order, the modules listed in /rik/modules.order.
// A module that fails to load is reported and skipped: it may be built in.
func loadModules() {
	f, err := os.Open(modulesOrder)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name := strings.TrimSpace(sc.Text())
		if name == "" || strings.HasPrefix(name, "#") {
			continue
		}
		if err := loadModule(filepath.Join(modulesDir, filepath.Base(name))); err != nil {
			logf("loading module %s: %v", name, err)
		}
	}
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	if strings.HasSuffix(path, ".xz") || strings.HasSuffix(path, ".gz") || strings.HasSuffix(path, ".zst") {
		flags = unix.MODULE_INIT_COMPRESSED_FILE
	}
	err = unix.FinitModule(int(f.Fd()), "", flags)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

func setupNetwork(cfg *bootConfig) error {
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		return fmt.Errorf("bringing up lo: %w", err)
	}
	if !cfg.IP.IsValid() {
		return dhcpNetwork(cfg) // dhcp.go
	}
	var eth netlink.Link
	for deadline := time.Now().Add(10 * time.Second); ; {
		eth, err = netlink.LinkByName("eth0")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for eth0: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: cfg.IP.Addr().AsSlice(), Mask: net.CIDRMask(cfg.IP.Bits(), 32)}}
	if err := netlink.AddrAdd(eth, addr); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("adding %s to eth0: %w", cfg.IP, err)
	}
	if err := netlink.LinkSetUp(eth); err != nil {
		return fmt.Errorf("bringing up eth0: %w", err)
	}
	if cfg.GW.IsValid() {
		r := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: cfg.GW.AsSlice()}
		if err := netlink.RouteAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("adding default route via %s: %w", cfg.GW, err)
		}
	}
	logf("eth0 %s gw %s", cfg.IP, cfg.GW)
	return nil
}

func switchRoot(cfg bootConfig) error {
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := os.Stat(cfg.Root); err == nil {
			break
		} else if time.Now().After(deadline) {
			return fmt.Errorf("waiting for root disk %s: %w", cfg.Root, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := os.MkdirAll(newRoot, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", newRoot, err)
	}
	if err := unix.Mount(cfg.Root, newRoot, cfg.FSType, 0, ""); err != nil {
		return fmt.Errorf("mounting root %s (%s): %w", cfg.Root, cfg.FSType, err)
	}
	for _, d := range []string{"/dev", "/proc", "/sys"} {
		dst := filepath.Join(newRoot, d)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", dst, err)
		}
		if err := unix.Mount(d, dst, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("moving %s: %w", d, err)
		}
	}
	if err := unix.Chdir(newRoot); err != nil {
		return fmt.Errorf("entering %s: %w", newRoot, err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("moving root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	// Optional mounts a usual userland expects; failures are not fatal.
	_ = os.MkdirAll("/dev/pts", 0o755)
	_ = unix.Mount("devpts", "/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "")
	_ = os.MkdirAll("/dev/shm", 0o1777)
	_ = unix.Mount("tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "")
	return nil
}

func writeResolvConf(cfg bootConfig) {
	var b strings.Builder
	for _, d := range cfg.DNS {
		fmt.Fprintf(&b, "nameserver %s\n", d)
	}
	_ = os.MkdirAll("/etc", 0o755)
	if err := os.WriteFile("/etc/resolv.conf", []byte(b.String()), 0o644); err != nil {
		logf("writing /etc/resolv.conf: %v", err)
	}
}

// runEntrypoint starts the entrypoint, reaps every child, forwards stop
// requests and returns the entrypoint's exit code.
func runEntrypoint(cfg bootConfig) (int, error) {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT, unix.SIGPWR)
	// Ctrl-Alt-Del sends SIGINT to PID 1 instead of rebooting.
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)
	go watchPowerButton(sigs)

	env := entrypointEnv(cfg.Env)
	argv := append([]string{cfg.Init}, cfg.Args...)
	proc, err := os.StartProcess(cfg.Init, argv, &os.ProcAttr{
		Dir:   "/",
		Env:   env,
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		return 127, fmt.Errorf("starting %s: %w", cfg.Init, err)
	}
	logf("started %s (pid %d)", cfg.Init, proc.Pid)
	var killAt <-chan time.Time
	for {
		select {
		case <-killAt:
			logf("entrypoint still running after %s, killing", stopGrace)
			_ = unix.Kill(proc.Pid, unix.SIGKILL)
		case s := <-sigs:
			if s != unix.SIGCHLD {
				logf("stop requested (%v)", s)
				_ = unix.Kill(proc.Pid, unix.SIGTERM)
				if killAt == nil {
					killAt = time.After(stopGrace)
				}
				continue
			}
			for {
				var ws unix.WaitStatus
				pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
				if err != nil || pid <= 0 {
					break
				}
				if pid == proc.Pid {
					return exitCode(ws.Exited(), ws.ExitStatus(), ws.Signaled(), int(ws.Signal())), nil
				}
			}
		}
	}
}

// watchPowerButton sends SIGPWR on sigs when an input device reports
// KEY_POWER (the ACPI power button QEMU's system_powerdown presses).
func watchPowerButton(sigs chan<- os.Signal) {
	devs, _ := filepath.Glob("/dev/input/event*")
	for _, d := range devs {
		go func() {
			f, err := os.Open(d)
			if err != nil {
				return
			}
			defer f.Close()
			const evKey, keyPower = 1, 116
			buf := make([]byte, 24) // struct input_event on 64-bit
			for {
				if _, err := io.ReadFull(f, buf); err != nil {
					return
				}
				typ := binary.LittleEndian.Uint16(buf[16:])
				code := binary.LittleEndian.Uint16(buf[18:])
				val := int32(binary.LittleEndian.Uint32(buf[20:]))
				if typ == evKey && code == keyPower && val == 1 {
					sigs <- unix.SIGPWR
				}
			}
		}()
	}
}

// halt ends the VM: power off (QEMU exits with -no-reboot), or reboot
// (Firecracker exits on the guest's reboot).
func halt(reboot bool) {
	_ = unix.Kill(-1, unix.SIGTERM)
	time.Sleep(100 * time.Millisecond)
	_ = unix.Kill(-1, unix.SIGKILL)
	unix.Sync()
	_ = unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY, "")
	cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
	if reboot {
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	}
	_ = unix.Reboot(cmd)
	// Not reached unless reboot failed; PID 1 must never exit.
	for {
		time.Sleep(time.Hour)
	}
}
