// Package qemu runs Function microVMs with QEMU's microvm machine: KVM when
// /dev/kvm is usable, else TCG (with the tsc_early_khz hint the guest needs
// to boot without a long calibration). Graceful stop goes through QMP
// (system_powerdown, the ACPI power button).
package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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

// Args returns the QEMU command line for cfg (no I/O).
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
	}
	args := []string{binary,
		"-name", "rik-" + cfg.ID,
		"-M", "microvm,acpi=on",
		"-accel", accel,
		"-cpu", cpu,
		"-smp", strconv.Itoa(vcpus),
		"-m", strconv.Itoa(mem),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", cfg.Kernel,
	}
	if sandbox {
		args = append(args, "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny")
	}
	if cfg.Initrd != "" {
		args = append(args, "-initrd", cfg.Initrd)
	}
	args = append(args,
		"-append", cmdline,
		"-chardev", "file,id=con,append=on,path="+escapeOpt(cfg.ConsoleLog),
		"-serial", "chardev:con",
		"-drive", "id=root,format=raw,if=none,file="+escapeOpt(cfg.RootDisk),
		"-device", "virtio-blk-device,drive=root",
		"-qmp", "unix:"+escapeOpt(QMPSocket(cfg.Dir))+",server=on,wait=off",
	)
	if cfg.Tap != "" {
		args = append(args,
			"-netdev", "tap,id=net0,script=no,downscript=no,ifname="+cfg.Tap,
			"-device", "virtio-net-device,netdev=net0,mac="+cfg.MAC.String())
	}
	return args
}

// escapeOpt escapes commas in a QEMU option value.
func escapeOpt(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// Start implements vmm.Driver.
func (d *Driver) Start(ctx context.Context, cfg vmm.Config) (vmm.Process, error) {
	accel := d.accel()
	khz := d.HostKHz
	if khz == 0 && accel == "tcg" {
		khz = vmm.HostKHz()
	}
	args := Args(d.Binary, accel, khz, !d.NoSandbox, cfg)
	p, err := vmm.StartDetached(args, cfg.Netns, filepath.Join(cfg.Dir, "vmm.log"))
	if err != nil {
		return vmm.Process{}, fmt.Errorf("starting qemu: %w", err)
	}
	p.Driver = d.Name()
	// QEMU opens the QMP socket once its devices are set up: wait for it so
	// that an early failure (bad tap, bad disk) is reported by Start.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if !vmm.Alive(p) {
			return vmm.Process{}, fmt.Errorf("qemu exited at start: %s", lastLines(filepath.Join(cfg.Dir, "vmm.log"), 5))
		}
		if c, err := net.Dial("unix", QMPSocket(cfg.Dir)); err == nil {
			c.Close()
			return p, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = vmm.Signal(p, 9)
			return vmm.Process{}, fmt.Errorf("qemu did not open its QMP socket in time")
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
