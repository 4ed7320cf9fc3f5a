package runtimes

import (
	"io/fs"
	"strings"

	"github.com/rik-org/rik/internal/riklet/vmm"
)

// KernelAuto as --kernel-path takes the newest guest kernel fetched into
// one of vmm.DefaultKernelDirs (test/kernel/fetch.sh DIR).
const KernelAuto = "auto"

// ResolveKernel replaces KernelAuto with the kernel found in dirs of fsys
// (the host's root), and its modules unless KernelModules is set; when
// none is found, KernelPath becomes "" and the node offers no functions.
// It returns what it did, for the log ("" when KernelPath was not auto).
func (c *Config) ResolveKernel(fsys fs.FS, dirs []string) string {
	if c.KernelPath != KernelAuto {
		return ""
	}
	k, ok := vmm.FindKernel(fsys, dirs)
	if !ok {
		c.KernelPath = ""
		return "no guest kernel in " + strings.Join(dirs, " or ") +
			": functions are not offered (fetch one: test/kernel/fetch.sh " + dirs[0] + "; `rik doctor` checks the node)"
	}
	c.KernelPath = k.Path
	if c.KernelModules == "" {
		c.KernelModules = k.Modules
	}
	return "guest kernel " + c.KernelPath + ", modules " + c.KernelModules
}
