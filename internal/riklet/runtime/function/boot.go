package function

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/rik-org/rik/internal/workload"
)

// Console markers printed by rik-init.
const (
	markerStarted = "rik-init: started "
	markerExit    = "rik-init: exit "
)

// kernelCmdline builds the guest kernel command line (no I/O). haltReboot
// makes rik-init end the VM with a reboot rather than a power off (a
// Firecracker VM exits on reboot; it has no ACPI power off).
func kernelCmdline(name string, fn workload.Function, net NetConfig, dns []netip.Addr, haltReboot bool) string {
	parts := []string{"console=ttyS0", "reboot=k", "panic=-1", "quiet", "rik.root=/dev/vda"}
	if haltReboot {
		parts = append(parts, "rik.halt=reboot")
	}
	if net.GuestIP.IsValid() {
		parts = append(parts, fmt.Sprintf("rik.ip=%s/%d", net.GuestIP, net.PrefixLen))
		if net.TapIP.IsValid() {
			parts = append(parts, "rik.gw="+net.TapIP.String())
		}
	}
	if len(dns) > 0 {
		s := make([]string, len(dns))
		for i, d := range dns {
			s[i] = d.String()
		}
		parts = append(parts, "rik.dns="+strings.Join(s, ","))
	}
	if name != "" {
		parts = append(parts, "rik.hostname="+name)
	}
	if ep := strings.Fields(fn.Execution.Entrypoint); len(ep) > 0 {
		parts = append(parts, "rik.init="+ep[0]) // its arguments: see execConfig
	}
	if fn.Execution.KernelArgs != "" {
		parts = append(parts, fn.Execution.KernelArgs)
	}
	return strings.Join(parts, " ")
}

// validateFunction checks what the runtime relies on, with field paths.
func validateFunction(inst workloadInstance) error {
	if err := workload.ValidInstanceID(inst.ID); err != nil {
		return err
	}
	fn := inst.Function
	if fn == nil {
		return fmt.Errorf("spec.function: required")
	}
	if fn.Execution.Rootfs == "" {
		return fmt.Errorf("spec.function.execution.rootfs: required")
	}
	if ep := fn.Execution.Entrypoint; ep != "" && !strings.HasPrefix(ep, "/") {
		return fmt.Errorf("spec.function.execution.entrypoint: must be an absolute path")
	}
	if f, ok := workload.ReservedKernelArg(fn.Execution.KernelArgs); ok {
		return fmt.Errorf("spec.function.execution.kernelArgs: %q is reserved", f)
	}
	if fn.Execution.VCPUs < 0 || fn.Execution.VCPUs > 64 {
		return fmt.Errorf("spec.function.execution.vcpus: must be 0-64")
	}
	if fn.Execution.Memory < 0 || fn.Execution.Memory > 1<<20 {
		return fmt.Errorf("spec.function.execution.memory: must be 0-1048576 MiB")
	}
	return nil
}

type workloadInstance struct {
	ID       string
	Function *workload.Function
}

// guestExitCode finds the last "rik-init: exit N" in console output.
func guestExitCode(console []byte) (int, bool) {
	i := bytes.LastIndex(console, []byte(markerExit))
	if i < 0 {
		return 0, false
	}
	rest := console[i+len(markerExit):]
	if j := bytes.IndexAny(rest, "\r\n"); j >= 0 {
		rest = rest[:j]
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(rest)))
	if err != nil || n < 0 || n > 255 {
		return 0, false
	}
	return n, true
}

// macFor derives a stable, locally administered unicast MAC from id.
func macFor(id string) net.HardwareAddr {
	h := sha256.Sum256([]byte(id))
	return net.HardwareAddr{0x52, 0x54, h[0], h[1], h[2], h[3]}
}
