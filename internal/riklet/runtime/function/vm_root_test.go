package function

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/riklet/cgroups"
	"github.com/rik-org/rik/internal/riklet/rootfs"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/riklet/vmm"
	"github.com/rik-org/rik/internal/workload"
)

// vmEnv is what a real-VM test needs: kernel, rik-init, a rootfs served on
// 127.0.0.1, a throwaway network namespace.
type vmEnv struct {
	kernel, modules, init string
	net                   *testNetwork
	rootfsURL             string // tar.gz over HTTP
	ext4URL               string // ext4 image over file://
	page                  string
	state                 string
	cgroup                string // the runtime's CgroupDir
}

func newVMEnv(t testing.TB) *vmEnv {
	t.Helper()
	requireRootTools(t, "qemu-system-x86_64", "mke2fs")
	kernel, modules := testKernel(t)
	e := &vmEnv{kernel: kernel, modules: modules, init: buildInit(t), page: "hello from a rik function\n"}
	tree := busyboxTree(t, e.page)
	tgz := tarGz(t, tree)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(tgz)
	}))
	t.Cleanup(srv.Close)
	e.rootfsURL = srv.URL + "/rootfs.tar.gz"
	img := filepath.Join(t.TempDir(), "rootfs.ext4")
	if out, err := runCmd("mke2fs", "-q", "-F", "-t", "ext4", "-d", tree, img, "64M"); err != nil {
		t.Fatalf("mke2fs: %v: %s", err, out)
	}
	e.ext4URL = "file://" + img
	e.net = newTestNetwork(t)
	e.state = t.TempDir()
	e.cgroup = fmt.Sprintf("rik-test-%d-%d/functions", os.Getpid(), time.Now().UnixNano())
	// A failed test must not leave its QEMUs running.
	t.Cleanup(func() {
		for pid := range strayVMs(filepath.Join(e.state, "functions")) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		cgroups.Remove(filepath.Dir(e.cgroup))
	})
	return e
}

func (e *vmEnv) config(logger *slog.Logger) Config {
	accel := os.Getenv("RIK_TEST_QEMU_ACCEL")
	if accel == "" {
		accel = "tcg"
	}
	return Config{
		StateDir: e.state, VMM: "qemu", KernelPath: e.kernel, KernelModulesDir: e.modules,
		InitBinary: e.init, Network: e.net, StopGrace: 10 * time.Second, QEMUAccel: accel,
		Logger: logger, BootTimeout: 90 * time.Second, CgroupDir: e.cgroup,
		// The test serves its rootfs on 127.0.0.1 and keeps its image in
		// a temporary directory.
		Fetch: rootfs.FetchPolicy{Dirs: []string{os.TempDir()}, AllowPrivate: true},
	}
}

func fnInstance(id, rootfs, entrypoint string) runtime.Instance {
	return runtime.Instance{ID: id, Name: "fn-" + id[:5], Workload: workload.Workload{
		Kind: workload.KindFunction, Name: "fn",
		Spec: workload.Spec{Function: &workload.Function{
			Execution: workload.Execution{Rootfs: rootfs, VCPUs: 1, Memory: 128, Entrypoint: entrypoint},
			Exposure:  workload.PortList{{Port: 18080, TargetPort: 80}},
		}},
	}}
}

// get fetches url from inside the namespace, retrying until deadline.
func (e *vmEnv) get(t testing.TB, url string, within time.Duration) string {
	t.Helper()
	c := e.net.client()
	c.Timeout = 2 * time.Second
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		resp, err := c.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return string(b)
			}
			err = &httpStatusErr{resp.Status}
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("GET %s: %v", url, last)
	return ""
}

type httpStatusErr struct{ s string }

func (e *httpStatusErr) Error() string { return e.s }

type recorder struct {
	mu  sync.Mutex
	all []runtime.Status
}

func (r *recorder) report(s runtime.Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = append(r.all, s)
}

func (r *recorder) find(id string, phase runtime.Phase) (runtime.Status, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.all {
		if s.InstanceID == id && s.Phase == phase {
			return s, true
		}
	}
	return runtime.Status{}, false
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestVMLifecycle boots real microVMs under QEMU (TCG unless
// RIK_TEST_QEMU_ACCEL says otherwise): start, serve HTTP, logs, idempotent
// start, riklet restart (adopt an owned VM, remove an unowned one), guest
// exit code, graceful stop leaving nothing behind.
func TestVMLifecycle(t *testing.T) {
	e := newVMEnv(t)
	ctx := context.Background()
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	rec := &recorder{}
	r1, err := New(ctx, e.config(logger), rec.report)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if r1.VMM() != "qemu" {
		t.Fatalf("VMM() = %q, want qemu", r1.VMM())
	}

	a := fnInstance("aaaaaaaa-0000-4000-8000-000000000001", e.rootfsURL, "")
	stA, err := r1.Start(ctx, a)
	if err != nil {
		t.Fatalf("Start(a): %v\n%s", err, logs)
	}
	if stA.Phase != runtime.PhaseRunning || stA.IP != "10.63.1.1" {
		t.Fatalf("Start(a) = %+v, want RUNNING at 10.63.1.1", stA)
	}
	for _, k := range []string{TimingFetched, TimingNetworkReady, TimingVMMStarted, TimingGuestRunning} {
		if _, ok := stA.Timings[k]; !ok {
			t.Errorf("Start(a) timings %v lack %q", stA.Timings, k)
		}
	}
	t.Logf("a: timings %v", stA.Timings)
	if len(stA.Ports) != 1 || stA.Ports[0].Port != 18080 || stA.Ports[0].TargetPort != 80 {
		t.Errorf("Start(a) ports = %+v", stA.Ports)
	}
	if _, ok := rec.find(a.ID, runtime.PhaseCreating); !ok {
		t.Errorf("no CREATING progress reported")
	}
	if got := e.get(t, "http://10.63.1.1/", 60*time.Second); got != e.page {
		t.Fatalf("GET guest = %q, want %q", got, e.page)
	}
	checkSandboxed(t, e, a.ID, DefaultVMUIDFirst)
	again, err := r1.Start(ctx, a)
	if err != nil || again.Phase != runtime.PhaseRunning || again.IP != stA.IP {
		t.Fatalf("second Start(a) = %+v, %v; want the running instance", again, err)
	}
	var out bytes.Buffer
	if err := r1.Logs(ctx, a, runtime.LogOptions{}, &out); err != nil || !strings.Contains(out.String(), "guest: serving") {
		t.Fatalf("Logs(a) = %q, %v; want the guest's output", out.String(), err)
	}

	b := fnInstance("bbbbbbbb-0000-4000-8000-000000000002", e.ext4URL, "")
	if st, err := r1.Start(ctx, b); err != nil || st.Phase != runtime.PhaseRunning {
		t.Fatalf("Start(b) = %+v, %v", st, err)
	}
	stateB, err := readState(filepath.Join(e.state, "functions", b.ID))
	if err != nil {
		t.Fatal(err)
	}
	stateA, err := readState(filepath.Join(e.state, "functions", a.ID))
	if err != nil {
		t.Fatal(err)
	}

	// riklet restart: a is owned, b is not.
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}
	r2, err := New(ctx, e.config(logger), rec.report)
	if err != nil {
		t.Fatalf("New (restart): %v", err)
	}
	defer r2.Close()
	sts, err := r2.Recover(ctx, []runtime.Instance{a})
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	if len(sts) != 1 || sts[0].InstanceID != a.ID || sts[0].Phase != runtime.PhaseRunning || sts[0].IP != stA.IP {
		t.Fatalf("Recover = %+v, want a RUNNING", sts)
	}
	if vmm.Alive(stateB.Process) {
		t.Errorf("unowned vm b (pid %d) still runs after Recover", stateB.Process.Pid)
	}
	if _, err := os.Stat(filepath.Join(e.state, "functions", b.ID)); !os.IsNotExist(err) {
		t.Errorf("unowned vm b's directory still there: %v", err)
	}
	if got := e.net.links(t); len(got) != 1 || got[0] != "tapt1" {
		t.Errorf("taps after Recover = %v, want [tapt1]", got)
	}
	if got := e.get(t, "http://10.63.1.1/", 10*time.Second); got != e.page {
		t.Fatalf("GET adopted guest = %q", got)
	}
	checkSandboxed(t, e, a.ID, DefaultVMUIDFirst)

	// Guest exit code comes back through the reporter.
	c := fnInstance("cccccccc-0000-4000-8000-000000000003", e.rootfsURL, "/bin/fail.sh")
	if _, err := r2.Start(ctx, c); err != nil {
		t.Fatalf("Start(c): %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	var exited runtime.Status
	for ok := false; !ok; exited, ok = rec.find(c.ID, runtime.PhaseExited) {
		if time.Now().After(deadline) {
			t.Fatalf("no EXITED status for c; reported: %+v", rec.all)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if exited.ExitCode == nil || *exited.ExitCode != 3 || exited.Reason != api.ReasonError {
		t.Errorf("c exited with %+v, want code 3, reason Error", exited)
	}
	if err := r2.Stop(ctx, c); err != nil {
		t.Fatalf("Stop(c): %v", err)
	}

	// Graceful stop of the adopted vm: nothing left behind.
	if err := r2.Stop(ctx, a); err != nil {
		t.Fatalf("Stop(a): %v", err)
	}
	if vmm.Alive(stateA.Process) {
		t.Errorf("vm a (pid %d) still runs after Stop", stateA.Process.Pid)
	}
	if !strings.Contains(logs.String(), "vm stopped gracefully") || !strings.Contains(logs.String(), a.ID) {
		t.Errorf("Stop(a) was not graceful; log:\n%s", logs)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.state, "functions")); len(ents) != 0 {
		t.Errorf("functions dir not empty after stops: %v", ents)
	}
	if got := e.net.links(t); len(got) != 0 {
		t.Errorf("taps left after Stop: %v", got)
	}
	if got := cgroups.Children(e.cgroup); len(got) != 0 {
		t.Errorf("vm cgroups left after Stop: %v", got)
	}
	if err := r2.Stop(ctx, a); err != nil {
		t.Errorf("second Stop(a): %v", err)
	}
	if _, ok := rec.find(a.ID, runtime.PhaseExited); ok {
		t.Errorf("a stopped on request but an exit was reported")
	}
}

// BenchmarkCreateToReachable measures Start → guest HTTP reachable for a
// real microVM (QEMU, TCG unless RIK_TEST_QEMU_ACCEL=kvm), rootfs cached.
func BenchmarkCreateToReachable(b *testing.B) {
	e := newVMEnv(b)
	benchCreateToReachable(b, e, e.config(nil))
}

// benchCreateToReachable measures Start → guest HTTP reachable with cfg.
func benchCreateToReachable(b *testing.B, e *vmEnv, cfg Config) {
	ctx := context.Background()
	r, err := New(ctx, cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	warm := fnInstance("00000000-0000-4000-8000-00000000beef", e.rootfsURL, "")
	if _, err := r.Start(ctx, warm); err != nil { // fetch and convert the rootfs once
		b.Fatal(err)
	}
	if err := r.Stop(ctx, warm); err != nil {
		b.Fatal(err)
	}
	var guestMS, bootMS, cpuMS, netMS float64
	i := 0
	for b.Loop() {
		i++
		inst := fnInstance(fmt.Sprintf("%08d-0000-4000-8000-000000000000", i), e.rootfsURL, "")
		st, err := r.Start(ctx, inst)
		if err != nil {
			b.Fatal(err)
		}
		if got := e.get(b, "http://"+st.IP+"/", 60*time.Second); got != e.page {
			b.Fatalf("GET = %q", got)
		}
		guestMS += float64(st.Timings[TimingGuestRunning])
		netMS += float64(st.Timings[TimingNetworkReady] - st.Timings[TimingFetched])
		bootMS += float64(st.Timings[TimingGuestRunning] - st.Timings[TimingVMMStarted])
		cpuMS += float64(vmmCPU(b, e, inst.ID).Milliseconds())
		b.StopTimer()
		if err := r.Stop(ctx, inst); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(guestMS/float64(i), "ms-to-guest-init/op")
	b.ReportMetric(bootMS/float64(i), "ms-vmm-to-guest-init/op")
	b.ReportMetric(cpuMS/float64(i), "ms-vmm-cpu/op")
	b.ReportMetric(netMS/float64(i), "ms-network-setup/op")
}

// vmmCPU returns the CPU time (user and system, every thread) the VMM of
// instance id has used so far: unlike wall time, the machine's load does
// not stretch it.
func vmmCPU(t testing.TB, e *vmEnv, id string) time.Duration {
	s, err := readState(filepath.Join(e.state, "functions", id))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.Atoi(f[11]) // fields 14 and 15, in clock ticks (1/100 s)
	stime, _ := strconv.Atoi(f[12])
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// checkSandboxed checks that the QEMU of instance id runs as uid (and the
// same gid, no other group), without capabilities, inside its own cgroup
// sized from the instance (1 vCPU, 128 MiB), and holds none of the riklet's
// files but its own.
func checkSandboxed(t *testing.T, e *vmEnv, id string, uid uint32) {
	t.Helper()
	s, err := readState(filepath.Join(e.state, "functions", id))
	if err != nil {
		t.Fatal(err)
	}
	pid := s.Process.Pid
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	ids := fmt.Sprintf("\t%d\t%d\t%d\t%d\n", uid, uid, uid, uid)
	for _, want := range []string{"Uid:" + ids, "Gid:" + ids, "CapEff:\t0000000000000000\n", "CapPrm:\t0000000000000000\n"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("qemu (pid %d) status lacks %q:\n%s", pid, want, status)
		}
	}
	if !regexp.MustCompile(`\nGroups:\s*\n`).Match(status) {
		t.Errorf("qemu keeps supplementary groups:\n%s", status)
	}
	if !strings.Contains(string(status), "Seccomp:\t2") {
		t.Errorf("qemu runs without its seccomp sandbox:\n%s", status)
	}
	path := e.cgroup + "/" + id
	procCg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	for _, c := range []string{"memory", "pids"} {
		if !regexp.MustCompile(`(?m)^\d+:([a-z_]+,)*` + c + `(,[a-z_]+)*:/` + regexp.QuoteMeta(path) + `$|^0::/` + regexp.QuoteMeta(path) + `$`).Match(procCg) {
			t.Errorf("qemu not in its %s cgroup %s:\n%s", c, path, procCg)
		}
	}
	if !slices.Contains(cgroups.Procs(path), pid) {
		t.Errorf("cgroup %s holds %v, not qemu %d", path, cgroups.Procs(path), pid)
	}
	want := strconv.Itoa((128 + vmmOverheadMiB) << 20)
	var limit string
	for _, f := range []string{"memory.max", "memory.limit_in_bytes"} {
		for _, root := range cgroups.Roots() {
			if b, err := os.ReadFile(filepath.Join(root, path, f)); err == nil {
				limit = strings.TrimSpace(string(b))
			}
		}
	}
	if limit != want {
		t.Errorf("memory limit of %s = %q, want %s", path, limit, want)
	}
	for _, f := range []string{"memory.max_usage_in_bytes", "memory.peak"} {
		for _, root := range cgroups.Roots() {
			if b, err := os.ReadFile(filepath.Join(root, path, f)); err == nil {
				t.Logf("vm %s: %s %s of a %s limit", id, f, strings.TrimSpace(string(b)), limit)
			}
		}
	}
	// Everything it holds open is its own: no file of the riklet's.
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if strings.HasPrefix(target, "/") && !strings.HasPrefix(target, filepath.Join(e.state, "functions", id)) &&
			!strings.HasPrefix(target, filepath.Join(e.state, "function-boot")) && target != "/dev/null" && !strings.HasPrefix(target, "/dev/net/tun") {
			t.Errorf("qemu holds %s (fd %s)", target, fd.Name())
		}
	}
}
