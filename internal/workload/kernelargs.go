package workload

import "strings"

// reservedKernelParams are the kernel parameters rik sets itself (the
// function runtime, the VMM drivers) or that would replace the guest's
// init: a definition may not set them. Every "rik." parameter (read by
// rik-init) is reserved too, and "--", after which the kernel hands the
// rest to init.
var reservedKernelParams = map[string]bool{
	"init": true, "rdinit": true, "root": true, "rootfstype": true, "rootflags": true,
	"initrd": true, "console": true, "reboot": true, "panic": true, "tsc_early_khz": true,
}

// ReservedKernelArg returns the first parameter of a kernel command line
// that rik reserves, as written, and whether there is one. It reads args
// as both the kernel and rik-init could: the kernel splits on spaces
// outside double quotes and strips the quotes ("rik.ip"="x" is rik.ip=x),
// rik-init splits on every space (so x="a rik.ip=y" hides a rik.ip=y from
// the kernel, not from rik-init); the kernel also treats '-' and '_' alike
// in names. A parameter is reserved if either reading sees it.
func ReservedKernelArg(args string) (string, bool) {
	for _, f := range strings.Fields(strings.ReplaceAll(args, `"`, "")) {
		if f == "--" {
			return f, true
		}
		name, _, _ := strings.Cut(f, "=")
		name = strings.ReplaceAll(name, "-", "_")
		if strings.HasPrefix(name, "rik.") || reservedKernelParams[name] {
			return f, true
		}
	}
	return "", false
}
