// Package cgroups makes, fills and removes rik's cgroups, on hosts with
// cgroup v1 (one hierarchy per controller, as on hybrid hosts), cgroup v2
// (the unified tree) or both. Paths are relative to each hierarchy's root,
// like "rik/functions/<id>".
package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Limits are what a cgroup is sized to; a zero field is no limit.
type Limits struct {
	CPUMillis   int64 // CPU time, in thousandths of a CPU (1500 = 1.5 CPUs)
	MemoryBytes int64 // memory, page cache included
	Pids        int64 // processes and threads
}

// cpuPeriod is the CFS period quotas are expressed in (100ms, the default).
const cpuPeriod = 100000

// hierarchy is one mounted cgroup hierarchy.
type hierarchy struct {
	Root        string   // mount point
	V2          bool     // the unified hierarchy
	Controllers []string // v1: from the mount options; v2: cgroup.controllers of the root
}

func (h hierarchy) has(c string) bool { return slices.Contains(h.Controllers, c) }

// parseMountinfo lists the cgroup hierarchies of a /proc/self/mountinfo,
// each once (a hierarchy mounted twice shares its device number). The
// controllers of a v2 hierarchy are left for the caller to read.
func parseMountinfo(mountinfo string) []hierarchy {
	var out []hierarchy
	seen := map[string]bool{}
	for _, line := range strings.Split(mountinfo, "\n") {
		before, after, ok := strings.Cut(line, " - ")
		f, typ := strings.Fields(before), strings.Fields(after)
		if !ok || len(f) < 5 || len(typ) < 3 || (typ[0] != "cgroup" && typ[0] != "cgroup2") || seen[f[2]] {
			continue
		}
		seen[f[2]] = true
		h := hierarchy{Root: unescapeMount(f[4]), V2: typ[0] == "cgroup2"}
		if !h.V2 {
			for _, opt := range strings.Split(typ[2], ",") {
				if opt != "rw" && opt != "ro" && !strings.Contains(opt, "=") {
					h.Controllers = append(h.Controllers, opt)
				}
			}
		}
		out = append(out, h)
	}
	return out
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// hierarchies returns the host's cgroup hierarchies.
func hierarchies() []hierarchy {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	return withControllers(parseMountinfo(string(b)), os.ReadFile)
}

// Roots returns the mount points of every cgroup hierarchy.
func Roots() []string {
	var roots []string
	for _, h := range hierarchies() {
		roots = append(roots, h.Root)
	}
	return roots
}

// needed lists the controllers l uses.
func (l Limits) needed() []string {
	var cs []string
	if l.CPUMillis > 0 {
		cs = append(cs, "cpu")
	}
	if l.MemoryBytes > 0 {
		cs = append(cs, "memory")
	}
	if l.Pids > 0 {
		cs = append(cs, "pids")
	}
	return cs
}

// limitFiles returns the files (and values) that set l's limit of
// controller c in a v1 or v2 hierarchy, in the order to write them.
func limitFiles(v2 bool, c string, l Limits) [][2]string {
	quota := strconv.FormatInt(l.CPUMillis*cpuPeriod/1000, 10)
	switch {
	case c == "cpu" && v2:
		return [][2]string{{"cpu.max", quota + " " + strconv.Itoa(cpuPeriod)}}
	case c == "cpu":
		return [][2]string{{"cpu.cfs_period_us", strconv.Itoa(cpuPeriod)}, {"cpu.cfs_quota_us", quota}}
	case c == "memory" && v2:
		return [][2]string{{"memory.max", strconv.FormatInt(l.MemoryBytes, 10)}}
	case c == "memory":
		return [][2]string{{"memory.limit_in_bytes", strconv.FormatInt(l.MemoryBytes, 10)}}
	case c == "pids":
		return [][2]string{{"pids.max", strconv.FormatInt(l.Pids, 10)}}
	}
	return nil
}

// plan returns the hierarchies a cgroup sized to l lives in, each with
// the controllers of l it provides. Every controller l needs must be
// found; on a host with both, v2 is preferred.
func plan(hs []hierarchy, l Limits) (map[int][]string, error) {
	out := map[int][]string{}
	for _, c := range l.needed() {
		best := -1
		for i, h := range hs {
			if h.has(c) && (best < 0 || h.V2 && !hs[best].V2) {
				best = i
			}
		}
		if best < 0 {
			return nil, fmt.Errorf("cgroup controller %s not available", c)
		}
		out[best] = append(out[best], c)
	}
	return out, nil
}

// Create makes cgroup path, sized to l, in every hierarchy holding one of
// the controllers l needs (with v2, it enables them in the parents'
// cgroup.subtree_control). A cgroup that exists is resized. On error what
// it made is removed.
func Create(path string, l Limits) error {
	if err := checkPath(path); err != nil {
		return err
	}
	hs := hierarchies()
	p, err := plan(hs, l)
	if err != nil {
		return fmt.Errorf("creating cgroup %s: %w", path, err)
	}
	for i, cs := range p {
		h := hs[i]
		if h.V2 {
			err = enable(h.Root, path, cs)
		}
		dir := filepath.Join(h.Root, path)
		if err == nil {
			err = os.MkdirAll(dir, 0o755)
		}
		for _, c := range cs {
			for _, f := range limitFiles(h.V2, c, l) {
				if err == nil {
					err = os.WriteFile(filepath.Join(dir, f[0]), []byte(f[1]), 0o644)
				}
			}
		}
		if err != nil {
			return errors.Join(fmt.Errorf("creating cgroup %s: %w", path, err), Remove(path))
		}
	}
	return nil
}

// enable turns controllers cs on in cgroup.subtree_control of root and of
// every parent of path below it, so that path gets them.
func enable(root, path string, cs []string) error {
	dir := root
	for _, seg := range append([]string{""}, strings.Split(filepath.Dir(path), "/")...) {
		if seg == "." {
			break
		}
		dir = filepath.Join(dir, seg)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		b, _ := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
		var add []string
		for _, c := range cs {
			if !slices.Contains(strings.Fields(string(b)), c) {
				add = append(add, "+"+c)
			}
		}
		if len(add) == 0 {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(strings.Join(add, " ")), 0o644); err != nil {
			return fmt.Errorf("enabling %s in %s: %w", strings.Join(cs, ", "), dir, err)
		}
	}
	return nil
}

// checkPath accepts a relative path without "." or ".." segments.
func checkPath(path string) error {
	if path == "" || filepath.IsAbs(path) || filepath.Clean(path) != path || strings.HasPrefix(path, "..") {
		return fmt.Errorf("cgroup path %q: want a relative path like rik/functions/id", path)
	}
	return nil
}

// OnThrowawayThread runs fn on an OS thread of its own, locked to it and
// thrown away afterwards (so a cgroup or namespace fn moves it to never
// leaks to other goroutines), and returns fn's error. The thread is never
// the process's main thread, which Go parks instead of ending.
func OnThrowawayThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked (but below): the thread ends with this goroutine
		if unix.Gettid() == unix.Getpid() {
			// Holding the main thread, the nested call gets another one.
			errc <- OnThrowawayThread(fn)
			runtime.UnlockOSThread()
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Enter makes the process the calling thread next starts (cmd, with attr
// as its SysProcAttr) begin inside cgroup path: in v1 hierarchies the
// thread itself joins it (its child inherits that); in v2 the child is
// cloned into it (CLONE_INTO_CGROUP). Call it within OnThrowawayThread,
// and call done once the process is started.
func Enter(path string, attr *syscall.SysProcAttr) (done func(), err error) {
	if err := checkPath(path); err != nil {
		return nil, err
	}
	done = func() {}
	joined := false
	for _, h := range hierarchies() {
		dir := filepath.Join(h.Root, path)
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		joined = true
		if !h.V2 {
			if err := os.WriteFile(filepath.Join(dir, "tasks"), []byte(strconv.Itoa(unix.Gettid())), 0o644); err != nil {
				done()
				return nil, fmt.Errorf("joining cgroup %s: %w", dir, err)
			}
			continue
		}
		fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done()
			return nil, fmt.Errorf("opening cgroup %s: %w", dir, err)
		}
		attr.UseCgroupFD, attr.CgroupFD = true, fd
		prev := done
		done = func() { unix.Close(fd); prev() }
	}
	if !joined {
		return nil, fmt.Errorf("cgroup %s: not found", path)
	}
	return done, nil
}

// Procs lists the processes in cgroup path, in any hierarchy.
func Procs(path string) []int {
	seen := map[int]bool{}
	var out []int
	for _, root := range Roots() {
		b, err := os.ReadFile(filepath.Join(root, path, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
				seen[pid] = true
				out = append(out, pid)
			}
		}
	}
	return out
}

// Children lists the names of the cgroups right under path, in any
// hierarchy.
func Children(path string) []string {
	seen := map[string]bool{}
	var names []string
	for _, root := range Roots() {
		ents, err := os.ReadDir(filepath.Join(root, path))
		if err != nil {
			continue
		}
		for _, e := range ents {
			if e.IsDir() && !seen[e.Name()] {
				seen[e.Name()] = true
				names = append(names, e.Name())
			}
		}
	}
	return names
}

// OOMKilled reports whether the memory controller of cgroup path saw an
// OOM kill.
func OOMKilled(path string) bool {
	for _, root := range Roots() {
		for _, f := range []string{"memory.oom_control", "memory.events"} {
			b, err := os.ReadFile(filepath.Join(root, path, f))
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(b), "\n") {
				k, v, _ := strings.Cut(line, " ")
				if k == "oom_kill" && v != "0" {
					return true
				}
			}
		}
	}
	return false
}

// Remove removes cgroup path and everything under it, in every hierarchy.
// A missing cgroup is fine. It waits a little for a cgroup whose last
// process is still being reaped.
func Remove(path string) error {
	if err := checkPath(path); err != nil {
		return err
	}
	var errs []error
	for _, root := range Roots() {
		if err := removeTree(filepath.Join(root, path)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeTree rmdirs a cgroup directory, children first (cgroup
// directories hold only pseudo files, removed with the directory).
func removeTree(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("reading cgroup %s: %w", dir, err)
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := removeTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		err := unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("removing cgroup %s: %w", dir, err)
		}
	}
}

// Host is the node's cgroups as a value, for the runtimes that declare
// the part they use as an interface (their tests use stateful fakes).
type Host struct{}

func (Host) Create(path string, l Limits) error { return Create(path, l) }
func (Host) Remove(path string) error           { return Remove(path) }
func (Host) Procs(path string) []int            { return Procs(path) }
func (Host) Children(path string) []string      { return Children(path) }
func (Host) OOMKilled(path string) bool         { return OOMKilled(path) }
