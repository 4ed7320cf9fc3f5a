package function

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/riklet/cgroups"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/riklet/vmm"
)

// fakeCgroups is a stateful cgroupHost: cgroups are paths, a process is
// in one until it ends.
type fakeCgroups struct {
	mu     sync.Mutex
	limits map[string]cgroups.Limits
	procs  map[string][]int
	oom    map[string]bool
}

func newFakeCgroups() *fakeCgroups {
	return &fakeCgroups{limits: map[string]cgroups.Limits{}, procs: map[string][]int{}, oom: map[string]bool{}}
}

func (f *fakeCgroups) add(path string, pid int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.procs[path] = append(f.procs[path], pid)
}

func (f *fakeCgroups) Create(path string, l cgroups.Limits) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.limits[path] = l
	return nil
}

func (f *fakeCgroups) live(path string) []int {
	return slices.DeleteFunc(slices.Clone(f.procs[path]), func(pid int) bool {
		return !vmm.Alive(vmm.Process{Pid: pid, StartTime: mustStartTime(pid)})
	})
}

func mustStartTime(pid int) uint64 {
	st, _ := vmm.StartTime(pid)
	return st
}

func (f *fakeCgroups) Remove(path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.live(path)) > 0 {
		return syscall.EBUSY
	}
	delete(f.limits, path)
	delete(f.procs, path)
	return nil
}

func (f *fakeCgroups) Procs(path string) []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.live(path)
}

func (f *fakeCgroups) Children(path string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for p := range f.limits {
		if rest, ok := strings.CutPrefix(p, path+"/"); ok && !strings.Contains(rest, "/") {
			out = append(out, rest)
		}
	}
	slices.Sort(out)
	return out
}

func (f *fakeCgroups) OOMKilled(path string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.oom[path]
}

func (f *fakeCgroups) paths() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for p := range f.limits {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

func TestFreeID(t *testing.T) {
	tests := []struct {
		first, count uint32
		used         []uint32
		want         uint32
		ok           bool
	}{
		{100, 3, nil, 100, true},
		{100, 3, []uint32{100, 102}, 101, true},
		{100, 3, []uint32{100, 101, 102}, 0, false},
		{100, 0, nil, 0, false},
		{^uint32(0) - 1, 10, []uint32{^uint32(0) - 1, ^uint32(0)}, 0, false}, // no wrap to 0
	}
	for _, tt := range tests {
		used := map[uint32]bool{}
		for _, u := range tt.used {
			used[u] = true
		}
		if got, ok := freeID(tt.first, tt.count, used); got != tt.want || ok != tt.ok {
			t.Errorf("freeID(%d, %d, %v) = %d, %v; want %d, %v", tt.first, tt.count, tt.used, got, ok, tt.want, tt.ok)
		}
	}
}

func TestVMLimits(t *testing.T) {
	over := int64(vmmOverheadMiB) << 20
	tests := []struct {
		vcpus, mem int
		want       cgroups.Limits
	}{
		{1, 128, cgroups.Limits{CPUMillis: 1250, MemoryBytes: 128<<20 + over, Pids: vmmPids + 1}},
		{4, 2048, cgroups.Limits{CPUMillis: 4250, MemoryBytes: 2048<<20 + over, Pids: vmmPids + 4}},
		{0, 0, cgroups.Limits{CPUMillis: 1250, MemoryBytes: 128<<20 + over, Pids: vmmPids + 1}},
	}
	for _, tt := range tests {
		if got := vmLimits(tt.vcpus, tt.mem); got != tt.want {
			t.Errorf("vmLimits(%d, %d) = %+v, want %+v", tt.vcpus, tt.mem, got, tt.want)
		}
	}
}

func TestReadableBy(t *testing.T) {
	dir, boot := t.TempDir(), t.TempDir()
	open := filepath.Join(dir, "open")
	os.WriteFile(open, []byte("k1"), 0o644)
	closed := filepath.Join(dir, "closed")
	os.WriteFile(closed, []byte("k2"), 0o600)
	ours := filepath.Join(boot, "initramfs")
	os.WriteFile(ours, []byte("i"), 0o600)
	if got, err := readableBy(open, boot); err != nil || got != open {
		t.Errorf("readable file: %s, %v", got, err)
	}
	got, err := readableBy(closed, boot)
	b, _ := os.ReadFile(got)
	if fi, _ := os.Stat(got); err != nil || filepath.Dir(got) != boot || string(b) != "k2" || fi.Mode().Perm() != 0o644 {
		t.Errorf("root-only file: copy %s (%q), %v", got, b, err)
	}
	if fi, _ := os.Stat(closed); fi.Mode().Perm() != 0o600 {
		t.Errorf("the user's file was changed: %v", fi.Mode())
	}
	if got, err := readableBy(ours, boot); err != nil || got != ours {
		t.Errorf("own file: %s, %v", got, err)
	} else if fi, _ := os.Stat(ours); fi.Mode().Perm() != 0o644 {
		t.Errorf("own file mode %v, want 0644", fi.Mode())
	}
}

// Each VM runs as its own uid in its own cgroup, both given back on stop,
// kept across a restart, and what no VM owns is removed by Recover.
func TestSandboxUIDsAndCgroups(t *testing.T) {
	e := newFakeEnv(t)
	ctx := context.Background()
	a, b := e.inst("aaa", ""), e.inst("bbb", "")
	for _, in := range []runtime.Instance{a, b} {
		if _, err := e.rt.Start(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	first := uint32(DefaultVMUIDFirst)
	for i, c := range e.driver.started {
		if c.UID != first+uint32(i) || c.GID != c.UID || c.Cgroup != DefaultCgroupDir+"/"+c.ID {
			t.Errorf("vm %s: uid %d gid %d cgroup %q", c.ID, c.UID, c.GID, c.Cgroup)
		}
	}
	if d := cmp.Diff([]string{"rik/functions/aaa", "rik/functions/bbb"}, e.cg.paths()); d != "" {
		t.Errorf("cgroups (-want +got):\n%s", d)
	}
	if l := e.cg.limits["rik/functions/aaa"]; l != vmLimits(0, 0) {
		t.Errorf("limits of aaa = %+v", l)
	}
	if err := e.rt.Stop(ctx, a); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"rik/functions/bbb"}, e.cg.paths()); d != "" {
		t.Errorf("cgroups after stop (-want +got):\n%s", d)
	}

	// Restart: b is adopted with its uid; a stray cgroup with a process
	// (a VMM whose directory is gone) is emptied and removed.
	stray := e.inst("stray", "")
	if _, err := e.rt.Start(ctx, stray); err != nil {
		t.Fatal(err)
	}
	strayProc := e.rt.vms["stray"].state.Process
	os.RemoveAll(filepath.Join(e.state, "functions", "stray"))
	e.rt.Close()
	r2 := e.newRuntime(t)
	if _, err := r2.Recover(ctx, []runtime.Instance{b}); err != nil {
		t.Fatal(err)
	}
	if vmm.Alive(strayProc) {
		t.Error("the stray VMM still runs")
	}
	if d := cmp.Diff([]string{"rik/functions/bbb"}, e.cg.paths()); d != "" {
		t.Errorf("cgroups after recover (-want +got):\n%s", d)
	}
	c := e.inst("ccc", "")
	if _, err := r2.Start(ctx, c); err != nil {
		t.Fatal(err)
	}
	if got := e.driver.started[len(e.driver.started)-1]; got.UID != first { // a's, free again; b keeps first+1
		t.Errorf("new vm got uid %d, want %d", got.UID, first)
	}
	for _, in := range []runtime.Instance{b, c} {
		if err := r2.Stop(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.cg.paths(); len(got) != 0 {
		t.Errorf("cgroups left: %v", got)
	}
}

func TestSandboxNoFreeUID(t *testing.T) {
	e := newFakeEnv(t)
	e.rt.cfg.VMUIDCount = 1
	ctx := context.Background()
	if _, err := e.rt.Start(ctx, e.inst("one", "")); err != nil {
		t.Fatal(err)
	}
	st, err := e.rt.Start(ctx, e.inst("two", ""))
	if err == nil || st.Phase != runtime.PhaseFailed || st.Reason != api.ReasonVMMFailed || !strings.Contains(st.Message, "no free VM uid") {
		t.Fatalf("Start beyond the uid range = %+v, %v", st, err)
	}
	if e.net.has("two") || slices.Contains(e.cg.paths(), "rik/functions/two") {
		t.Error("failed start left its network or cgroup")
	}
	if err := e.rt.Stop(ctx, e.inst("one", "")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.Start(ctx, e.inst("two", "")); err != nil {
		t.Errorf("Start after a uid was freed: %v", err)
	}
	e.rt.Stop(ctx, e.inst("two", ""))
}

func TestOOMKilledReported(t *testing.T) {
	e := newFakeEnv(t)
	ctx := context.Background()
	in := e.inst("oom", "/crash")
	e.cg.oom["rik/functions/oom"] = true
	if _, err := e.rt.Start(ctx, in); err != nil {
		t.Fatal(err)
	}
	st := e.waitFor(t, in.ID, runtime.PhaseFailed)
	if st.Reason != api.ReasonOOMKilled || !strings.Contains(st.Message, "memory limit") {
		t.Errorf("exit = %+v, want OOMKilled", st)
	}
	e.rt.Stop(ctx, in)
}
