package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/rik-org/rik/internal/controller"
	"github.com/rik-org/rik/internal/workload"
)

// admissionFlags registers the admission settings on fs. Each flag's
// default is its environment variable, else rik's default. After fs is
// parsed, the returned function gives the controller's Admission.
func admissionFlags(fs *flag.FlagSet) (func() (controller.Admission, error), error) {
	def := controller.DefaultAdmission()
	var errs []error
	envInt := func(name string, d int) int {
		v := os.Getenv(name)
		if v == "" {
			return d
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %q: not a number", name, v))
		}
		return n
	}
	dirs := def.Policy.RootfsDirs
	if v := os.Getenv("RIK_ROOTFS_DIRS"); v != "" {
		dirs = splitList(v)
	}
	dirsGiven := false
	fs.Func("rootfs-dir", fmt.Sprintf("directory a file:// rootfs may be under (repeatable; env RIK_ROOTFS_DIRS, comma-separated; default %s)", strings.Join(dirs, ",")),
		func(v string) error {
			if !dirsGiven {
				dirs, dirsGiven = nil, true
			}
			dirs = append(dirs, splitList(v)...)
			return nil
		})
	ports := fs.String("reserved-ports", envOr(os.Getenv, "RIK_RESERVED_PORTS", "22"),
		"host ports workloads may not expose, besides those below 1024 and rik's own (env RIK_RESERVED_PORTS)")
	cpu := fs.Int("default-cpu", envInt("RIK_DEFAULT_CPU", def.Policy.DefaultCPU), "millicores given to a container without resources.cpu (env RIK_DEFAULT_CPU; 0: none)")
	mem := fs.Int("default-memory", envInt("RIK_DEFAULT_MEMORY", def.Policy.DefaultMemory), "MiB given to a container without resources.memory (env RIK_DEFAULT_MEMORY; 0: none)")
	maxAll := fs.Int("max-instances", envInt("RIK_MAX_INSTANCES", def.MaxInstances), "cap on the cluster's instances (env RIK_MAX_INSTANCES; 0: no cap)")
	maxPending := fs.Int("max-pending", envInt("RIK_MAX_PENDING", def.MaxPending), "cap on the cluster's PENDING instances (env RIK_MAX_PENDING; 0: no cap)")
	if len(errs) > 0 {
		return nil, errs[0]
	}
	return func() (controller.Admission, error) {
		a := controller.Admission{MaxInstances: *maxAll, MaxPending: *maxPending}
		a.Policy.DefaultCPU, a.Policy.DefaultMemory = *cpu, *mem
		var err error
		if a.Policy.ReservedPorts, err = workload.ParsePortList(*ports); err != nil {
			return a, fmt.Errorf("--reserved-ports: %w", err)
		}
		for _, d := range dirs {
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
	}, nil
}

// splitList splits a comma-separated setting, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
