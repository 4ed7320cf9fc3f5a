package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/rik-org/rik/internal/controller"
	"github.com/rik-org/rik/internal/workload"
)

// admissionFlags defines the admission settings on fs. After fs is parsed
// (and the environment and file applied), the returned function gives the
// controller's Admission.
func admissionFlags(fs *pflag.FlagSet) func() (controller.Admission, error) {
	def := controller.DefaultAdmission()
	dirs := fs.StringSlice("rootfs-dir", def.Policy.RootfsDirs,
		"directory a file:// rootfs may be under (repeatable or comma-separated; RIK_ROOTFS_DIRS too)")
	ports := fs.String("reserved-ports", "22", "host ports workloads may not expose, besides those below 1024 and rik's own (comma-separated)")
	cpu := fs.Int("default-cpu", def.Policy.DefaultCPU, "millicores given to a container without resources.cpu (0: none)")
	mem := fs.Int("default-memory", def.Policy.DefaultMemory, "MiB given to a container without resources.memory (0: none)")
	maxAll := fs.Int("max-instances", def.MaxInstances, "cap on the cluster's instances (0: no cap)")
	maxPending := fs.Int("max-pending", def.MaxPending, "cap on the cluster's PENDING instances (0: no cap)")
	return func() (controller.Admission, error) {
		a := controller.Admission{MaxInstances: *maxAll, MaxPending: *maxPending}
		a.Policy.DefaultCPU, a.Policy.DefaultMemory = *cpu, *mem
		var err error
		if a.Policy.ReservedPorts, err = workload.ParsePortList(*ports); err != nil {
			return a, fmt.Errorf("--reserved-ports: %w", err)
		}
		for _, d := range *dirs {
			if d = strings.TrimSpace(d); d == "" {
				continue
			}
			if !filepath.IsAbs(d) {
				return a, fmt.Errorf("--rootfs-dir %q: want an absolute path", d)
			}
			a.Policy.RootfsDirs = append(a.Policy.RootfsDirs, filepath.Clean(d))
		}
		switch {
		case *cpu < 0 || *cpu > workload.MaxCPUMillis:
			return a, fmt.Errorf("--default-cpu %d: want 0 to %d millicores", *cpu, workload.MaxCPUMillis)
		case *mem < 0 || *mem > workload.MaxMemoryMiB:
			return a, fmt.Errorf("--default-memory %d: want 0 to %d MiB", *mem, workload.MaxMemoryMiB)
		case *maxAll < 0 || *maxPending < 0:
			return a, fmt.Errorf("--max-instances %d, --max-pending %d: want 0 (no cap) or more", *maxAll, *maxPending)
		}
		return a, nil
	}
}
