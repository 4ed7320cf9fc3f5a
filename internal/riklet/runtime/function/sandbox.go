package function

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/rik-org/rik/internal/atomicfile"
	"github.com/rik-org/rik/internal/riklet/cgroups"
	"github.com/rik-org/rik/internal/riklet/vmm/qemu"
	"github.com/rik-org/rik/internal/workload"
)

// What a VMM process may use beyond its guest (measured in
// docs/benchmarks.md): QEMU's own memory and TCG translation cache, its
// I/O and main-loop threads.
const (
	vmmOverheadMiB    = 96 + qemu.TCGCacheMiB
	vmmOverheadMillis = 250
	vmmPids           = 256 // QEMU's threads: vCPUs, I/O workers (up to 64), RCU, main loop
)

// cgroupHost is what the runtime needs from the node's cgroups
// (cgroups.Host; tests use a stateful fake).
type cgroupHost interface {
	Create(path string, l cgroups.Limits) error
	Remove(path string) error
	Procs(path string) []int
	Children(path string) []string
	OOMKilled(path string) bool
}

// vmLimits sizes the cgroup of a VM with vcpus and memMiB (0: defaults).
func vmLimits(vcpus, memMiB int) cgroups.Limits {
	if vcpus <= 0 {
		vcpus = 1
	}
	if memMiB <= 0 {
		memMiB = 128
	}
	return cgroups.Limits{
		CPUMillis:   int64(vcpus)*1000 + vmmOverheadMillis,
		MemoryBytes: int64(memMiB+vmmOverheadMiB) << 20,
		Pids:        vmmPids + int64(vcpus),
	}
}

// cgroupPath is the cgroup of VM id.
func (r *Runtime) cgroupPath(id string) string { return r.cfg.CgroupDir + "/" + id }

// freeID returns the lowest id of first..first+count-1 not in used.
func freeID(first, count uint32, used map[uint32]bool) (uint32, bool) {
	for i := uint32(0); i < count && first+i >= first; i++ {
		if !used[first+i] {
			return first + i, true
		}
	}
	return 0, false
}

// allocUID reserves a uid (and gid, the same number) for v's VMM; 0 when
// the driver cannot run unprivileged. It is v's until its cleanup.
func (r *Runtime) allocUID(v *vm) (uint32, error) {
	if !r.unprivileged {
		return 0, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	used := map[uint32]bool{}
	for _, o := range r.vms {
		if o != v && o.uid != 0 {
			used[o.uid] = true
		}
	}
	uid, ok := freeID(r.cfg.VMUIDFirst, r.cfg.VMUIDCount, used)
	if !ok {
		return 0, fmt.Errorf("no free VM uid in %d..%d", r.cfg.VMUIDFirst, r.cfg.VMUIDFirst+r.cfg.VMUIDCount-1)
	}
	v.uid = uid
	return uid, nil
}

// sandbox prepares the confinement of v's VMM: its uid (and gid) and its
// cgroup, sized from e. cleanup undoes both.
func (r *Runtime) sandbox(v *vm, e workload.Execution) (uid uint32, cgroup string, err error) {
	if uid, err = r.allocUID(v); err != nil {
		return 0, "", err
	}
	cgroup = r.cgroupPath(v.id)
	if err := r.cgroups.Create(cgroup, vmLimits(e.VCPUs, e.Memory)); err != nil {
		return 0, "", err
	}
	return uid, cgroup, nil
}

// removeCgroup kills what still runs in the VM's cgroup (only VMMs start
// there) and removes it.
func (r *Runtime) removeCgroup(id string) error {
	path := r.cgroupPath(id)
	for _, pid := range r.cgroups.Procs(path) {
		r.log.Info("killing process left in a vm's cgroup", "instance", id, "pid", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if err := r.cgroups.Remove(path); err != nil {
		return fmt.Errorf("removing cgroup of %s: %w", id, err)
	}
	return nil
}

// readableBy returns path, or a copy of it in dir, that every user may
// read: an unprivileged VMM re-opens its kernel and initramfs through
// /proc/self/fd, which checks the file's own permissions.
func readableBy(path, dir string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if fi.Mode().Perm()&0o004 != 0 {
		return path, nil
	}
	if filepath.Dir(path) == dir { // ours: open it up
		return path, os.Chmod(path, fi.Mode().Perm()|0o444)
	}
	src, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer src.Close()
	b, err := io.ReadAll(src)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	out := filepath.Join(dir, "readable-"+filepath.Base(path))
	if err := atomicfile.Write(out, b, 0o644); err != nil {
		return "", fmt.Errorf("copying %s: %w", path, err)
	}
	return out, nil
}
