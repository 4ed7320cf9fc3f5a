package cgroups

import (
	"crypto/rand"
	"encoding/hex"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/rik-org/rik/internal/testutil"
)

const hybrid = `30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
41 22 0:31 / /mnt/memory\040again rw,relatime - cgroup cgroup rw,memory
`

const unified = `25 22 0:23 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`

func TestParseMountinfo(t *testing.T) {
	want := []hierarchy{
		{Root: "/sys/fs/cgroup/cpu,cpuacct", Controllers: []string{"cpu", "cpuacct"}},
		{Root: "/sys/fs/cgroup/memory", Controllers: []string{"memory"}},
		{Root: "/sys/fs/cgroup/pids", Controllers: []string{"pids"}},
		{Root: "/sys/fs/cgroup/systemd", Controllers: []string{"xattr"}},
		{Root: "/sys/fs/cgroup/unified", V2: true},
	}
	if d := cmp.Diff(want, parseMountinfo(hybrid)); d != "" {
		t.Errorf("hybrid (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]hierarchy{{Root: "/sys/fs/cgroup", V2: true}}, parseMountinfo(unified)); d != "" {
		t.Errorf("unified (-want +got):\n%s", d)
	}
	if got := parseMountinfo("garbage\n1 2 3\n - cgroup\n"); len(got) != 0 {
		t.Errorf("garbage parsed as %v", got)
	}
}

func TestPlan(t *testing.T) {
	v1 := parseMountinfo(hybrid)
	v2 := []hierarchy{{Root: "/sys/fs/cgroup", V2: true, Controllers: []string{"cpu", "memory", "pids", "io"}}}
	both := append(slices.Clone(v1[:2]), hierarchy{Root: "/u", V2: true, Controllers: []string{"memory", "pids"}})
	all := Limits{CPUMillis: 1250, MemoryBytes: 1 << 28, Pids: 64}
	tests := []struct {
		name string
		hs   []hierarchy
		l    Limits
		want map[int][]string
		err  bool
	}{
		{"v1", v1, all, map[int][]string{0: {"cpu"}, 1: {"memory"}, 2: {"pids"}}, false},
		{"v2", v2, all, map[int][]string{0: {"cpu", "memory", "pids"}}, false},
		{"v2 preferred", both, all, map[int][]string{0: {"cpu"}, 2: {"memory", "pids"}}, false},
		{"memory only", v1, Limits{MemoryBytes: 1}, map[int][]string{1: {"memory"}}, false},
		{"no pids controller", v1[:2], all, nil, true},
		{"nothing to limit", nil, Limits{}, map[int][]string{}, false},
	}
	for _, tt := range tests {
		got, err := plan(tt.hs, tt.l)
		if (err != nil) != tt.err || !tt.err && !cmp.Equal(tt.want, got) {
			t.Errorf("%s: plan = %v, %v; want %v (error %v)", tt.name, got, err, tt.want, tt.err)
		}
	}
}

func TestLimitFiles(t *testing.T) {
	l := Limits{CPUMillis: 1250, MemoryBytes: 256 << 20, Pids: 128}
	tests := []struct {
		v2   bool
		c    string
		want [][2]string
	}{
		{false, "cpu", [][2]string{{"cpu.cfs_period_us", "100000"}, {"cpu.cfs_quota_us", "125000"}}},
		{true, "cpu", [][2]string{{"cpu.max", "125000 100000"}}},
		{false, "memory", [][2]string{{"memory.limit_in_bytes", "268435456"}}},
		{true, "memory", [][2]string{{"memory.max", "268435456"}}},
		{false, "pids", [][2]string{{"pids.max", "128"}}},
		{true, "pids", [][2]string{{"pids.max", "128"}}},
		{true, "io", nil},
	}
	for _, tt := range tests {
		if d := cmp.Diff(tt.want, limitFiles(tt.v2, tt.c, l)); d != "" {
			t.Errorf("limitFiles(v2=%v, %s) (-want +got):\n%s", tt.v2, tt.c, d)
		}
	}
}

func TestCheckPath(t *testing.T) {
	for p, ok := range map[string]bool{
		"rik/functions/a": true, "rik": true,
		"": false, "/rik": false, "../x": false, "rik/../../x": false, "rik//x": false, "rik/./x": false,
	} {
		if err := checkPath(p); (err == nil) != ok {
			t.Errorf("checkPath(%q) = %v, want ok=%v", p, err, ok)
		}
	}
}

// TestRootCreateEnterRemove makes a real cgroup, starts a process in it
// from a thrown-away thread, checks its limits and membership, removes it.
func TestRootCreateEnterRemove(t *testing.T) {
	testutil.RequireRoot(t)
	var b [4]byte
	rand.Read(b[:])
	parent := "rik-test-" + hex.EncodeToString(b[:])
	path := parent + "/vm/one"
	t.Cleanup(func() { Remove(parent) })
	l := Limits{CPUMillis: 1500, MemoryBytes: 200 << 20, Pids: 32}
	if err := Create(path, l); err != nil {
		t.Fatal(err)
	}
	hs := hierarchies()
	p, err := plan(hs, l)
	if err != nil {
		t.Fatal(err)
	}
	for i, cs := range p {
		for _, c := range cs {
			for _, f := range limitFiles(hs[i].V2, c, l) {
				got, err := os.ReadFile(filepath.Join(hs[i].Root, path, f[0]))
				if err != nil || strings.TrimSpace(string(got)) != f[1] {
					t.Errorf("%s/%s/%s = %q, %v; want %q", hs[i].Root, path, f[0], got, err, f[1])
				}
			}
		}
	}
	// On a hybrid host, a cgroup in the unified tree too: Enter clones the
	// child into it (CLONE_INTO_CGROUP) while the thread joins the v1 ones.
	v2 := false
	for _, h := range hs {
		if h.V2 && len(p) > 0 && !slices.ContainsFunc(slices.Collect(maps.Keys(p)), func(i int) bool { return hs[i].V2 }) {
			if err := os.MkdirAll(filepath.Join(h.Root, path), 0o755); err != nil {
				t.Fatal(err)
			}
			v2 = true
		}
	}
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	err = OnThrowawayThread(func() error {
		done, err := Enter(path, cmd.SysProcAttr)
		if err != nil {
			return err
		}
		defer done()
		return cmd.Start()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	if procs := Procs(path); !slices.Contains(procs, cmd.Process.Pid) {
		t.Errorf("Procs(%s) = %v, want the child %d", path, procs, cmd.Process.Pid)
	}
	own, _ := os.ReadFile("/proc/self/cgroup")
	child, _ := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/cgroup")
	if v2 && !strings.Contains(string(child), "0::/"+path+"\n") {
		t.Errorf("the child is not in the unified %s:\n%s", path, child)
	}
	if strings.Contains(string(own), path) || !strings.Contains(string(child), ":/"+path+"\n") {
		t.Errorf("the child is not (alone) in %s:\nchild:\n%s\nself:\n%s", path, child, own)
	}
	if got := Children(parent + "/vm"); !slices.Equal(got, []string{"one"}) {
		t.Errorf("Children = %v", got)
	}
	if OOMKilled(path) {
		t.Error("OOMKilled on a fresh cgroup")
	}
	// A cgroup holding a process cannot go; once it ended, it goes.
	cmd.Process.Kill()
	cmd.Wait()
	if err := Remove(parent); err != nil {
		t.Fatal(err)
	}
	for _, root := range Roots() {
		if _, err := os.Stat(filepath.Join(root, parent)); err == nil {
			t.Errorf("%s left behind", filepath.Join(root, parent))
		}
	}
}

func TestOnThrowawayThread(t *testing.T) {
	pid := os.Getpid()
	for range 50 {
		var tid int
		err := OnThrowawayThread(func() error {
			tid = syscall.Gettid()
			return os.ErrClosed
		})
		if err != os.ErrClosed || tid == pid || tid == 0 {
			t.Fatalf("fn ran on thread %d (main %d), returned %v", tid, pid, err)
		}
	}
}
