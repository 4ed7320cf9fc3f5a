package pod

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rik-org/rik/internal/riklet/cgroups"
	"github.com/rik-org/rik/internal/riklet/podnet"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/testutil"
	"github.com/rik-org/rik/internal/testutil/netns"
	"github.com/rik-org/rik/internal/testutil/ociimage"
	"github.com/rik-org/rik/internal/workload"
)

// reports collects what a runtime reports.
type reports struct {
	mu  sync.Mutex
	all []runtime.Status
	ch  chan runtime.Status
}

func newReports() *reports { return &reports{ch: make(chan runtime.Status, 100)} }

func (r *reports) report(s runtime.Status) {
	r.mu.Lock()
	r.all = append(r.all, s)
	r.mu.Unlock()
	select {
	case r.ch <- s:
	default:
	}
}

// waitExit waits for an EXITED report of id.
func (r *reports) waitExit(t *testing.T, id string) runtime.Status {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case s := <-r.ch:
			if s.InstanceID == id && s.Phase == runtime.PhaseExited {
				return s
			}
		case <-timeout:
			t.Fatalf("no exit reported for %s", id)
		}
	}
}

type env struct {
	host   *netns.NS
	ref    string
	reg    *ociimage.Registry
	state  string
	cgroup string
	rep    *reports
	cfg    Config
}

func setup(t testing.TB) *env {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "runc", "ip")
	testutil.RequireFile(t, ociimage.BusyboxPath)
	host := netns.New(t)
	reg, ref := ociimage.BusyboxRegistry(t)
	var b [4]byte
	rand.Read(b[:])
	e := &env{host: host, ref: ref, reg: reg, state: t.TempDir(), cgroup: "rik-test-" + hex.EncodeToString(b[:]) + "/pods", rep: newReports()}
	e.cfg = Config{
		StateDir:  e.state,
		HostNetns: host.Path,
		StopGrace: 2 * time.Second,
		CgroupDir: e.cgroup,
		Logger:    testLogger(t),
	}
	t.Cleanup(func() {
		for _, root := range cgroups.Roots() {
			os.Remove(filepath.Join(root, e.cgroup))
			os.Remove(filepath.Join(root, filepath.Dir(e.cgroup)))
		}
	})
	return e
}

func (e *env) runtime(t testing.TB) *Runtime {
	t.Helper()
	r, err := New(context.Background(), e.cfg, e.rep.report)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func instance(name string, containers ...workload.Container) runtime.Instance {
	return runtime.Instance{
		ID:   uuid.NewString(),
		Name: name + "-abcde",
		Workload: workload.Workload{
			Kind: workload.KindPod, Name: name, Spec: workload.Spec{Containers: containers},
		},
	}
}

// httpGet fetches http://addr/path from inside ns.
func httpGet(ns *netns.NS, addr, path string) (string, error) {
	var body string
	err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: pod\r\n\r\n", path)
		b, err := io.ReadAll(c)
		if err != nil {
			return err
		}
		_, body, _ = strings.Cut(string(b), "\r\n\r\n")
		return nil
	})
	return body, err
}

func mounted(prefix string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], prefix) {
			out = append(out, fields[4])
		}
	}
	return out
}

// assertGone checks that nothing of pod id is left on the node.
func (e *env) assertGone(t *testing.T, r *Runtime, id string) {
	t.Helper()
	list, err := r.ctrs.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list {
		if strings.HasPrefix(c.ID, id) {
			t.Errorf("runc container %s left behind", c.ID)
		}
	}
	for _, m := range mounted(e.state) {
		if strings.Contains(m, id) {
			t.Errorf("mount %s left behind", m)
		}
	}
	for _, root := range cgroups.Roots() {
		if _, err := os.Stat(filepath.Join(root, e.cgroup, id)); err == nil {
			t.Errorf("cgroup %s left behind", filepath.Join(root, e.cgroup, id))
		}
	}
	if _, err := os.Stat(r.net.(*podnet.Manager).NetnsPath(id)); err == nil {
		t.Errorf("netns %s left behind", r.net.(*podnet.Manager).NetnsPath(id))
	}
	if slices.Contains(e.host.Links(t), "rikp"+hashOf(id)) {
		t.Errorf("veth of %s left behind", id)
	}
	if owners, _ := r.net.Owners(); slices.Contains(owners, id) {
		t.Errorf("network lease of %s left behind", id)
	}
	if _, err := os.Stat(r.podDir(id)); err == nil {
		t.Errorf("pod dir %s left behind", r.podDir(id))
	}
	if z := zombies(); len(z) > 0 {
		t.Errorf("zombie children left: %v", z)
	}
}

// zombies lists this process's children that are zombies.
func zombies() []string {
	var out []string
	for _, c := range children() {
		if c.state == "Z" {
			out = append(out, c.name)
		}
	}
	return out
}

// child is a child process of this test binary.
type child struct {
	name  string // "1234 (comm)", as /proc/<pid>/stat starts
	state string // R, S, Z...
	dir   string // /proc/<pid>
}

// children lists this process's children.
func children() []child {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	me := fmt.Sprint(os.Getpid())
	var out []child
	for _, st := range stats {
		b, err := os.ReadFile(st)
		if err != nil {
			continue
		}
		name, rest, ok := strings.Cut(string(b), ") ")
		f := strings.Fields(rest)
		if ok && len(f) > 1 && f[1] == me {
			out = append(out, child{name: name + ")", state: f[0], dir: filepath.Dir(st)})
		}
	}
	return out
}

func TestPodEndToEnd(t *testing.T) {
	e := setup(t)
	r := e.runtime(t)
	ctx := context.Background()
	inst := instance("web",
		workload.Container{Name: "web", Image: e.ref, Command: []string{"httpd", "-f", "-p", "80", "-h", "/www"}},
		workload.Container{
			Name: "side", Image: e.ref,
			Command: []string{"sh", "-c", `echo "args=$0,$1 greeting=$GREETING path=$PATH"
echo "memlimit=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max)"
for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://127.0.0.1:80/index.html && break; sleep 0.2; done
echo to-stderr >&2; exec sleep 3600`},
			Args:      []string{"first", "second"},
			Env:       []workload.EnvVar{{Name: "GREETING", Value: "hello world"}},
			Resources: &workload.Resources{Memory: 64, CPU: 250},
		},
	)
	st, err := r.Start(ctx, inst)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != runtime.PhaseRunning || st.IP == "" {
		t.Fatalf("status = %+v", st)
	}
	// Reachable at the pod IP from the node.
	body, err := httpGet(e.host, net.JoinHostPort(st.IP, "80"), "/index.html")
	if err != nil || body != "hello from rik\n" {
		t.Errorf("GET pod: %q, %v", body, err)
	}
	// Idempotent start.
	again, err := r.Start(ctx, inst)
	if err != nil || again.IP != st.IP || again.Phase != runtime.PhaseRunning {
		t.Errorf("second Start = %+v, %v", again, err)
	}
	// Env and args reach the process; stdout and stderr are logged.
	var logs bytes.Buffer
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && !strings.Contains(logs.String(), "to-stderr") {
		logs.Reset()
		if err := r.Logs(ctx, inst, runtime.LogOptions{Container: "side"}, &logs); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	want := "args=first,second greeting=hello world path=/usr/local/sbin"
	if !strings.Contains(logs.String(), want) || !strings.Contains(logs.String(), "to-stderr") {
		t.Errorf("logs = %q, want %q and to-stderr", logs.String(), want)
	}
	// The limit is what the container itself sees.
	if !strings.Contains(logs.String(), "memlimit=67108864") {
		t.Errorf("memory limit not visible inside the container: %q", logs.String())
	}
	// The containers share the network namespace: side reached web on 127.0.0.1.
	if !strings.Contains(logs.String(), "hello from rik") {
		t.Errorf("side did not reach web on localhost: %q", logs.String())
	}
	logs.Reset()
	if err := r.Logs(ctx, inst, runtime.LogOptions{Container: "side", Tail: 1}, &logs); err != nil || logs.String() != "to-stderr\n" {
		t.Errorf("tail 1 = %q, %v", logs.String(), err)
	}
	// Memory and CPU limits are in the container's cgroup.
	limit, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", e.cgroup, inst.ID, "side", "memory.limit_in_bytes"))
	if err != nil {
		limit, err = os.ReadFile(filepath.Join("/sys/fs/cgroup", e.cgroup, inst.ID, "side", "memory.max"))
	}
	if err != nil || strings.TrimSpace(string(limit)) != "67108864" {
		t.Errorf("memory limit = %q, %v; want 67108864", limit, err)
	}
	if q, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/cpu", e.cgroup, inst.ID, "side", "cpu.cfs_quota_us")); err == nil && strings.TrimSpace(string(q)) != "25000" {
		t.Errorf("cpu quota = %q, want 25000", q)
	}

	// Stop: SIGTERM ends httpd and sleep (pid 1 ignores it without a
	// handler, so SIGKILL after the grace period) and everything is removed.
	if err := r.Stop(ctx, inst); err != nil {
		t.Fatal(err)
	}
	e.assertGone(t, r, inst.ID)
	if err := r.Stop(ctx, inst); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	for _, s := range e.rep.all {
		if s.Phase == runtime.PhaseExited {
			t.Errorf("a stopped pod reported %+v", s)
		}
	}
}

func hashOf(id string) string { return strings.TrimPrefix(podnetVeth(id), "rikp") }

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}
