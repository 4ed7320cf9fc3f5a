package function

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/riklet/logfile"
	"github.com/rik-org/rik/internal/riklet/rootfs"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/riklet/vmm"
	"github.com/rik-org/rik/internal/workload"
)

// fakeDriver runs a shell script standing in for a VMM: it prints rik-init's
// markers on the console; rik.init=/exit7 makes the "guest" exit with 7,
// rik.init=/crash makes it die without a code. Shutdown sends SIGTERM,
// which the script turns into a clean "rik-init: exit 0".
type fakeDriver struct {
	mu        sync.Mutex
	shutdowns []string
	started   []vmm.Config
	failStart bool
	cg        *fakeCgroups // the "VMM" is put in its cgroup there
}

func (d *fakeDriver) Name() string { return "fake" }

func (d *fakeDriver) Start(ctx context.Context, cfg vmm.Config) (vmm.Process, error) {
	if d.failStart {
		return vmm.Process{}, errors.New("fake vmm refuses")
	}
	script := `trap 'echo "rik-init: exit 0" >> "$1"; exit 0' TERM
: >> "$1"
case "$2" in
*rik.init=/slowboot*) echo "booting" >> "$1"; sleep 1 ;;
*rik.init=/hang*) echo "rik-init: mounting root: no such device" >> "$1"; echo "rik-init: exit 255" >> "$1"; while :; do sleep 0.05; done ;;
esac
echo "rik-init: started /sbin/init (pid 1)" >> "$1"
case "$2" in
*rik.init=/exit7*) sleep 0.3; echo "rik-init: exit 7" >> "$1"; exit 0 ;;
*rik.init=/crash*) echo "kernel panic" >> "$1"; exit 1 ;;
*rik.init=/noboot*) echo "no init" >> "$1"; exit 1 ;;
esac
while :; do sleep 0.05; done`
	if strings.Contains(cfg.Cmdline, "rik.init=/noboot") {
		script = `echo "no init here" >> "$1"; exit 1`
	}
	p, err := vmm.StartDetached(vmm.Launch{Argv: []string{"/bin/sh", "-c", script, "fakevmm-" + cfg.ID, cfg.ConsoleLog, cfg.Cmdline},
		LogPath: filepath.Join(cfg.Dir, "vmm.log")})
	p.Driver = d.Name()
	d.mu.Lock()
	d.started = append(d.started, cfg)
	d.mu.Unlock()
	if err == nil && d.cg != nil {
		d.cg.add(cfg.Cgroup, p.Pid)
	}
	return p, err
}

func (d *fakeDriver) Shutdown(ctx context.Context, cfg vmm.Config, p vmm.Process) error {
	d.mu.Lock()
	d.shutdowns = append(d.shutdowns, cfg.ID)
	d.mu.Unlock()
	return vmm.Signal(p, 15)
}

// fakeNetwork is a stateful in-memory Network.
type fakeNetwork struct {
	mu        sync.Mutex
	next      int
	nets      map[string]NetConfig
	failSetup bool
	reconcile [][]string
}

func (n *fakeNetwork) Setup(ctx context.Context, id string, ports []workload.PortMapping) (NetConfig, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.failSetup {
		return NetConfig{}, errors.New("no address left")
	}
	n.next++
	nc := NetConfig{Tap: fmt.Sprintf("rik%d", n.next), GuestIP: netip.AddrFrom4([4]byte{10, 62, 0, byte(4*n.next + 1)}),
		TapIP: netip.AddrFrom4([4]byte{10, 62, 0, byte(4*n.next + 2)}), PrefixLen: 30, Ports: ports}
	n.nets[id] = nc
	return nc, nil
}

func (n *fakeNetwork) Teardown(ctx context.Context, id string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.nets, id)
	return nil
}

func (n *fakeNetwork) Reconcile(ctx context.Context, owned []string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.reconcile = append(n.reconcile, owned)
	keep := map[string]bool{}
	for _, id := range owned {
		keep[id] = true
	}
	for id := range n.nets {
		if !keep[id] {
			delete(n.nets, id)
		}
	}
	return nil
}

func (n *fakeNetwork) has(id string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.nets[id]
	return ok
}

type fakeEnv struct {
	rt     *Runtime
	cg     *fakeCgroups
	driver *fakeDriver
	net    *fakeNetwork
	rec    *recorder
	state  string
	rootfs string
	logs   *syncBuffer
}

func newFakeEnv(t *testing.T) *fakeEnv {
	t.Helper()
	cg := newFakeCgroups()
	e := &fakeEnv{cg: cg, driver: &fakeDriver{cg: cg}, net: &fakeNetwork{nets: map[string]NetConfig{}}, rec: &recorder{}, state: t.TempDir(), logs: &syncBuffer{}}
	img := make([]byte, 4096)
	img[1080], img[1081] = 0x53, 0xEF // looks like ext4
	e.rootfs = filepath.Join(t.TempDir(), "root.ext4")
	os.WriteFile(e.rootfs, img, 0o644)
	e.rt = e.newRuntime(t)
	// A test that ends (or fails) with fake VMs still running must not
	// leave them behind.
	t.Cleanup(func() {
		for pid := range strayVMs(filepath.Join(e.state, "functions")) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return e
}

func (e *fakeEnv) newRuntime(t *testing.T) *Runtime {
	cfg := Config{StateDir: e.state, Network: e.net, StopGrace: 2 * time.Second, Logger: slog.New(slog.NewTextHandler(e.logs, nil))}
	cfg.setDefaults()
	// The test's images are in its temporary directories.
	store, err := rootfs.NewStore(filepath.Join(e.state, "rootfs"), 0, rootfs.FetchPolicy{Dirs: []string{os.TempDir()}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(e.state, "functions"), 0o700)
	r := newRuntime(context.Background(), cfg, e.rec.report, e.driver, "/k", "/i", store, e.cg)
	r.unprivileged = true // as with QEMU
	t.Cleanup(func() { r.Close() })
	return r
}

func (e *fakeEnv) inst(id, entrypoint string) runtime.Instance {
	return runtime.Instance{ID: id, Name: "fn-1", Workload: workload.Workload{Kind: workload.KindFunction, Spec: workload.Spec{
		Function: &workload.Function{Execution: workload.Execution{Rootfs: "file://" + e.rootfs, Entrypoint: entrypoint},
			Exposure: workload.PortList{{Port: 8080, TargetPort: 80}, {TargetPort: 9000}}},
	}}}
}

func (e *fakeEnv) waitFor(t *testing.T, id string, phase runtime.Phase) runtime.Status {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if st, ok := e.rec.find(id, phase); ok {
			return st
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %s status for %s; got %+v", phase, id, e.rec.all)
	return runtime.Status{}
}

func TestStartStop(t *testing.T) {
	e := newFakeEnv(t)
	ctx := context.Background()
	in := e.inst("inst-1", "")
	st, err := e.rt.Start(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != runtime.PhaseRunning || st.IP != "10.62.0.5" || len(st.Ports) != 1 || st.Ports[0].Port != 8080 {
		t.Fatalf("Start = %+v", st)
	}
	for _, k := range []string{TimingFetched, TimingNetworkReady, TimingVMMStarted, TimingGuestRunning} {
		if _, ok := st.Timings[k]; !ok {
			t.Errorf("timings %v lack %s", st.Timings, k)
		}
	}
	s1, err := readState(filepath.Join(e.state, "functions", in.ID))
	if err != nil || !vmm.Alive(s1.Process) {
		t.Fatalf("vm.json %+v, %v: not a live process", s1, err)
	}
	if !strings.Contains(s1.VMM.Cmdline, "rik.ip=10.62.0.5/30 rik.gw=10.62.0.6") {
		t.Errorf("cmdline = %q", s1.VMM.Cmdline)
	}
	st2, err := e.rt.Start(ctx, in)
	if err != nil || st2.Phase != runtime.PhaseRunning {
		t.Fatalf("second Start = %+v, %v", st2, err)
	}
	if s2, _ := readState(filepath.Join(e.state, "functions", in.ID)); s2.Process != s1.Process {
		t.Errorf("second Start started another vm: %+v vs %+v", s2.Process, s1.Process)
	}
	if err := e.rt.Stop(ctx, in); err != nil {
		t.Fatal(err)
	}
	if vmm.Alive(s1.Process) {
		t.Errorf("vm still runs after Stop")
	}
	if len(e.driver.shutdowns) != 1 || !strings.Contains(e.logs.String(), "vm stopped gracefully") {
		t.Errorf("Stop was not graceful: shutdowns %v", e.driver.shutdowns)
	}
	if _, err := os.Stat(filepath.Join(e.state, "functions", in.ID)); !os.IsNotExist(err) {
		t.Errorf("instance dir left: %v", err)
	}
	if e.net.has(in.ID) {
		t.Errorf("network not torn down")
	}
	if _, ok := e.rec.find(in.ID, runtime.PhaseExited); ok {
		t.Errorf("exit reported for a requested stop")
	}
	if err := e.rt.Stop(ctx, in); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestExitReported(t *testing.T) {
	e := newFakeEnv(t)
	ctx := context.Background()
	in := e.inst("inst-exit", "/exit7")
	if _, err := e.rt.Start(ctx, in); err != nil {
		t.Fatal(err)
	}
	st := e.waitFor(t, in.ID, runtime.PhaseExited)
	if st.ExitCode == nil || *st.ExitCode != 7 || st.Reason != api.ReasonError {
		t.Errorf("exit = %+v, want code 7", st)
	}
	// Logs survive the exit; Start again restarts from scratch.
	var buf bytes.Buffer
	if err := e.rt.Logs(ctx, in, runtime.LogOptions{Tail: 1}, &buf); err != nil || buf.String() != "rik-init: exit 7\n" {
		t.Errorf("Logs tail 1 = %q, %v", buf.String(), err)
	}
	if st, err := e.rt.Start(ctx, e.inst(in.ID, "")); err != nil || st.Phase != runtime.PhaseRunning {
		t.Fatalf("restart = %+v, %v", st, err)
	}
	if err := e.rt.Stop(ctx, in); err != nil {
		t.Fatal(err)
	}

	crash := e.inst("inst-crash", "/crash")
	if _, err := e.rt.Start(ctx, crash); err != nil {
		t.Fatal(err)
	}
	if st := e.waitFor(t, crash.ID, runtime.PhaseFailed); st.Reason != api.ReasonVMCrashed || !strings.Contains(st.Message, "kernel panic") {
		t.Errorf("crash = %+v", st)
	}
}

// TestWaitGuest: a guest that starts its entrypoint and ends between two
// looks of waitGuest has started (its end is the watcher's to report), not
// failed to boot. This made TestExitReported flaky under load ("vm exited
// during boot") when the console was read before the liveness check.
func TestWaitGuest(t *testing.T) {
	tests := []struct {
		name    string
		console string // written by the "guest" as it ends, at the first liveness check
		alive   bool   // whether it still runs then
		want    string // "" = started
	}{
		{name: "started then ended", console: markerStarted + "/bin/job (pid 1)\nrik-init: exit 7\n"},
		{name: "started, running", console: markerStarted + "/sbin/init (pid 1)\n", alive: true},
		{name: "init failed", console: "rik-init: mounting root: no such device\n" + markerExit + "255\n", alive: true, want: "guest init failed: rik-init: mounting root"},
		{name: "ended before init", console: "kernel panic\n", want: "vm exited during boot: kernel panic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			console := filepath.Join(t.TempDir(), "console.log")
			looked := false
			alive := func() bool {
				if !looked { // the guest runs to this point between our looks
					looked = true
					if err := os.WriteFile(console, []byte(tt.console), 0o600); err != nil {
						t.Fatal(err)
					}
				}
				return tt.alive
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := waitGuest(ctx, console, alive, time.Minute)
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("waitGuest = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestStartRollsBack(t *testing.T) {
	tests := []struct {
		name       string
		setup      func(e *fakeEnv)
		entrypoint string
		rootfs     string
		bridge     bool // spec.function.network: bridge
		reason     string
	}{
		{name: "network", setup: func(e *fakeEnv) { e.net.failSetup = true }, reason: api.ReasonNetworkFailed},
		{name: "vmm", setup: func(e *fakeEnv) { e.driver.failStart = true }, reason: api.ReasonVMMFailed},
		{name: "boot", entrypoint: "/noboot", reason: api.ReasonBootFailed},
		{name: "rootfs", rootfs: "file:///nonexistent.ext4", reason: api.ReasonRootfsFailed},
		{name: "invalid", rootfs: "-", reason: api.ReasonInvalidSpec},
		{name: "bridge without a bridge network", bridge: true, reason: api.ReasonNetworkFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newFakeEnv(t)
			if tt.setup != nil {
				tt.setup(e)
			}
			in := e.inst("inst-rb", tt.entrypoint)
			if tt.bridge {
				in.Workload.Spec.Function.Network = workload.NetworkBridge
			}
			if tt.rootfs == "-" {
				in.Workload.Spec.Function.Execution.Rootfs = ""
			} else if tt.rootfs != "" {
				in.Workload.Spec.Function.Execution.Rootfs = tt.rootfs
			}
			st, err := e.rt.Start(context.Background(), in)
			if err == nil || st.Phase != runtime.PhaseFailed || st.Reason != tt.reason {
				t.Fatalf("Start = %+v, %v; want FAILED %s", st, err, tt.reason)
			}
			if _, err := os.Stat(filepath.Join(e.state, "functions", in.ID)); !os.IsNotExist(err) {
				t.Errorf("instance dir left after failed start")
			}
			if e.net.has(in.ID) {
				t.Errorf("network left after failed start")
			}
		})
	}
}

func TestRecover(t *testing.T) {
	e := newFakeEnv(t)
	ctx := context.Background()
	keep, drop, dead := e.inst("keep", ""), e.inst("drop", ""), e.inst("dead", "/exit7")
	for _, in := range []runtime.Instance{keep, drop, dead} {
		if _, err := e.rt.Start(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	e.waitFor(t, dead.ID, runtime.PhaseExited)
	sKeep, _ := readState(filepath.Join(e.state, "functions", keep.ID))
	sDrop, _ := readState(filepath.Join(e.state, "functions", drop.ID))
	e.rt.Close() // riklet stops; VMs keep running

	r2 := e.newRuntime(t)
	lost := e.inst("lost", "")
	sts, err := r2.Recover(ctx, []runtime.Instance{keep, dead, lost})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]runtime.Status{}
	for _, s := range sts {
		got[s.InstanceID] = s
	}
	if s := got[keep.ID]; s.Phase != runtime.PhaseRunning || s.IP == "" {
		t.Errorf("keep = %+v, want RUNNING", s)
	}
	if s := got[dead.ID]; s.Phase != runtime.PhaseExited || s.ExitCode == nil || *s.ExitCode != 7 {
		t.Errorf("dead = %+v, want EXITED 7", s)
	}
	if s := got[lost.ID]; s.Phase != runtime.PhaseFailed || s.Reason != api.ReasonLost {
		t.Errorf("lost = %+v, want FAILED Lost", s)
	}
	if !vmm.Alive(sKeep.Process) || vmm.Alive(sDrop.Process) {
		t.Errorf("after Recover: keep alive %v (want true), drop alive %v (want false)", vmm.Alive(sKeep.Process), vmm.Alive(sDrop.Process))
	}
	if _, err := os.Stat(filepath.Join(e.state, "functions", drop.ID)); !os.IsNotExist(err) {
		t.Errorf("unowned dir left")
	}
	if e.net.has(drop.ID) || !e.net.has(keep.ID) {
		t.Errorf("network after Reconcile: %v", e.net.nets)
	}
	// A VM whose directory vanished is found by its argv and killed.
	stray := e.inst("stray", "")
	if _, err := r2.Start(ctx, stray); err != nil {
		t.Fatal(err)
	}
	sStray, _ := readState(filepath.Join(e.state, "functions", stray.ID))
	os.RemoveAll(filepath.Join(e.state, "functions", stray.ID))
	r2.mu.Lock()
	delete(r2.vms, stray.ID)
	r2.mu.Unlock()
	if _, err := r2.Recover(ctx, []runtime.Instance{keep, dead}); err != nil {
		t.Fatal(err)
	}
	if vmm.Alive(sStray.Process) {
		t.Errorf("stray vm (pid %d) survived Recover", sStray.Process.Pid)
	}
	if !vmm.Alive(sKeep.Process) {
		t.Errorf("second Recover killed the adopted vm")
	}
	// The adopted VM is watched: its exit is reported.
	vmm.Signal(sKeep.Process, 9)
	if st := e.waitFor(t, keep.ID, runtime.PhaseFailed); st.Reason != api.ReasonVMCrashed {
		t.Errorf("adopted vm exit = %+v", st)
	}
	for _, in := range []runtime.Instance{keep, dead} {
		if err := r2.Stop(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(e.state, "functions")); len(ents) != 0 {
		t.Errorf("leftovers: %v", ents)
	}
}

func TestLogs(t *testing.T) {
	e := newFakeEnv(t)
	ctx := context.Background()
	in := e.inst("inst-logs", "")
	if err := e.rt.Logs(ctx, in, runtime.LogOptions{}, &bytes.Buffer{}); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Logs of unknown = %v, want ErrNotFound", err)
	}
	if _, err := e.rt.Start(ctx, in); err != nil {
		t.Fatal(err)
	}
	console := filepath.Join(e.state, "functions", in.ID, "console.log")
	fctx, cancel := context.WithCancel(ctx)
	out := &syncBuffer{}
	done := make(chan error)
	go func() { done <- e.rt.Logs(fctx, in, runtime.LogOptions{Follow: true}, out) }()
	time.Sleep(100 * time.Millisecond)
	f, _ := os.OpenFile(console, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString("line from guest\n")
	f.Close()
	deadline := time.Now().Add(3 * time.Second)
	for !strings.Contains(out.String(), "line from guest") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Logs follow: %v", err)
	}
	if !strings.Contains(out.String(), "rik-init: started") || !strings.Contains(out.String(), "line from guest") {
		t.Errorf("followed logs = %q", out.String())
	}
	if err := e.rt.Logs(ctx, runtime.Instance{ID: "../../etc"}, runtime.LogOptions{}, &bytes.Buffer{}); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Logs with a path id = %v", err)
	}
}

// TestExitStatusAfterRotate: the exit line rotated into console.log.1 just
// before the watcher read it is still the guest's exit, not a crash.
func TestExitStatusAfterRotate(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.log")
	os.WriteFile(p, []byte("guest output\nrik-init: exit 4\n"), 0o600)
	if err := logfile.Rotate(p, 1); err != nil {
		t.Fatal(err)
	}
	st := exitStatus("inst-rot", p)
	if st.Phase != runtime.PhaseExited || st.ExitCode == nil || *st.ExitCode != 4 {
		t.Fatalf("exitStatus after rotation = %+v, want EXITED 4", st)
	}
	os.WriteFile(p, []byte("rik-init: exit 0\n"), 0o600) // a later run's own line wins
	if st := exitStatus("inst-rot", p); st.ExitCode == nil || *st.ExitCode != 0 {
		t.Fatalf("exitStatus = %+v, want EXITED 0", st)
	}
}

// TestRecoverSparesNonVMMProcesses: a process that merely names a VM's
// files (an operator's "tail -f .../console.log") is not a stray VMM:
// Recover must not kill it.
func TestRecoverSparesNonVMMProcesses(t *testing.T) {
	e := newFakeEnv(t)
	ctx := context.Background()
	in := e.inst("inst-tail", "")
	if _, err := e.rt.Start(ctx, in); err != nil {
		t.Fatal(err)
	}
	console := filepath.Join(e.state, "functions", in.ID, "console.log")
	tail := osexec.Command("/bin/sh", "-c", "while :; do sleep 0.05; done", "tail", console)
	if err := tail.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { tail.Wait(); close(exited) }()
	defer func() { tail.Process.Kill(); <-exited }()
	if _, err := e.rt.Recover(ctx, []runtime.Instance{in}); err != nil {
		t.Fatal(err)
	}
	// The instance dir is gone (Stop), the "tail" still names it.
	if err := e.rt.Stop(ctx, in); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.Recover(ctx, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		t.Fatalf("Recover killed a process that is not a VMM (%v)", tail.ProcessState)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestRecoverInterruptedStart: a VM whose Start never saw its guest
// running (the riklet stopped mid-boot) is not adopted as RUNNING: Recover
// stops it and reports a failed start; Stop then removes the rest.
func TestRecoverInterruptedStart(t *testing.T) {
	e := newFakeEnv(t)
	ctx := context.Background()
	in := e.inst("inst-midboot", "")
	if _, err := e.rt.Start(ctx, in); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(e.state, "functions", in.ID)
	s, err := readState(dir)
	if err != nil {
		t.Fatal(err)
	}
	e.rt.Close()
	// vm.json as Start leaves it just after the VMM started.
	delete(s.Timings, TimingGuestRunning)
	if err := writeState(dir, s); err != nil {
		t.Fatal(err)
	}
	r2 := e.newRuntime(t)
	sts, err := r2.Recover(ctx, []runtime.Instance{in})
	if err != nil {
		t.Fatal(err)
	}
	if len(sts) != 1 || sts[0].Phase != runtime.PhaseFailed || sts[0].Reason != api.ReasonStartInterrupted {
		t.Fatalf("Recover = %+v, want FAILED StartInterrupted", sts)
	}
	if vmm.Alive(s.Process) {
		t.Errorf("vm of the interrupted start (pid %d) still runs", s.Process.Pid)
	}
	if err := r2.Stop(ctx, in); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) || e.net.has(in.ID) {
		t.Errorf("leftovers after Stop: dir %v, network %v", err, e.net.has(in.ID))
	}
}

// TestLogsFollowDuringBoot: following the logs of a VM that is still
// booting streams until it ends (it used to stop at once: the VM was not
// RUNNING yet).
func TestLogsFollowDuringBoot(t *testing.T) {
	e := newFakeEnv(t)
	ctx := context.Background()
	in := e.inst("inst-slow", "/slowboot")
	started := make(chan error, 1)
	go func() {
		_, err := e.rt.Start(ctx, in)
		started <- err
	}()
	console := filepath.Join(e.state, "functions", in.ID, "console.log")
	deadline := time.Now().Add(5 * time.Second)
	for b, _ := os.ReadFile(console); !strings.Contains(string(b), "booting"); b, _ = os.ReadFile(console) {
		if time.Now().After(deadline) {
			t.Fatal("the fake vm never started booting")
		}
		time.Sleep(10 * time.Millisecond)
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- e.rt.Logs(fctx, in, runtime.LogOptions{Follow: true}, out) }()
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(3 * time.Second)
	for !strings.Contains(out.String(), "rik-init: started") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("Logs -f ended (%v) while the vm runs; got %q", err, out.String())
	default:
	}
	if !strings.Contains(out.String(), "rik-init: started") {
		t.Errorf("followed logs = %q, want the guest's start", out.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Logs: %v", err)
	}
	if err := e.rt.Stop(ctx, in); err != nil {
		t.Fatal(err)
	}
}

// TestStartFailsWhenInitGivesUp: rik-init printing its exit before the
// entrypoint started is a failed boot at once, even when the VM does not
// end by itself (it used to wait for the whole boot timeout).
func TestStartFailsWhenInitGivesUp(t *testing.T) {
	e := newFakeEnv(t)
	in := e.inst("inst-hang", "/hang")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := e.rt.Start(ctx, in)
	if err == nil || st.Reason != api.ReasonBootFailed || !strings.Contains(err.Error(), "no such device") {
		t.Fatalf("Start = %+v, %v; want BootFailed with the console's cause", st, err)
	}
	if ctx.Err() != nil {
		t.Errorf("Start waited until its deadline")
	}
	if _, err := os.Stat(filepath.Join(e.state, "functions", in.ID)); !os.IsNotExist(err) {
		t.Errorf("instance dir left after failed start")
	}
}
