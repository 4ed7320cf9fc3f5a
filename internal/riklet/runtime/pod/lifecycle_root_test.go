package pod

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/workload"
)

func TestExitCodes(t *testing.T) {
	e := setup(t)
	r := e.runtime(t)
	ctx := context.Background()
	tests := []struct {
		script string
		code   int
		reason string
	}{
		{"echo bye; exit 3", 3, "Error"},
		{"true", 0, "Completed"},
		{"killed", 137, "Error"}, // SIGKILL from outside: 128+9
	}
	for _, tt := range tests {
		script := tt.script
		if script == "killed" {
			script = "exec sleep 3600"
		}
		inst := instance("job", workload.Container{Name: "main", Image: e.ref, Command: []string{"sh", "-c", script}})
		if _, err := r.Start(ctx, inst); err != nil {
			t.Fatal(err)
		}
		if tt.script == "killed" {
			if err := r.ctrs.Kill(ctx, runcID(inst.ID, "main"), syscall.SIGKILL, false); err != nil {
				t.Fatal(err)
			}
		}
		st := e.rep.waitExit(t, inst.ID)
		if st.ExitCode == nil || *st.ExitCode != tt.code || st.Reason != tt.reason {
			t.Errorf("%q: exit = %+v (code %v), want %d %s", tt.script, st, deref(st.ExitCode), tt.code, tt.reason)
		}
		if !strings.Contains(st.Message, "main") {
			t.Errorf("message %q does not name the container", st.Message)
		}
		if tt.code == 3 {
			var logs bytes.Buffer
			if err := r.Logs(ctx, inst, runtime.LogOptions{}, &logs); err != nil || logs.String() != "bye\n" {
				t.Errorf("logs of exited pod = %q, %v", logs.String(), err)
			}
		}
		if err := r.Stop(ctx, inst); err != nil {
			t.Fatal(err)
		}
		e.assertGone(t, r, inst.ID)
	}
}

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestRestartAfterExit(t *testing.T) {
	e := setup(t)
	r := e.runtime(t)
	ctx := context.Background()
	long := strings.Repeat("c", 63) // the longest container name
	inst := instance("crash", workload.Container{Name: long, Image: e.ref, Command: []string{"sh", "-c", "echo run; sleep 0.2; exit 1"}})
	for i := 0; i < 2; i++ { // the agent restarts with Stop + Start
		if _, err := r.Start(ctx, inst); err != nil {
			t.Fatal(err)
		}
		if st := e.rep.waitExit(t, inst.ID); st.ExitCode == nil || *st.ExitCode != 1 {
			t.Fatalf("run %d: %+v", i, st)
		}
		if err := r.Stop(ctx, inst); err != nil {
			t.Fatal(err)
		}
	}
	// Start directly after an exit (without Stop) also starts afresh.
	if _, err := r.Start(ctx, inst); err != nil {
		t.Fatal(err)
	}
	e.rep.waitExit(t, inst.ID)
	if _, err := r.Start(ctx, inst); err != nil {
		t.Fatal(err)
	}
	e.rep.waitExit(t, inst.ID)
	if err := r.Stop(ctx, inst); err != nil {
		t.Fatal(err)
	}
	e.assertGone(t, r, inst.ID)
}

func TestStartFailuresRollBack(t *testing.T) {
	e := setup(t)
	r := e.runtime(t)
	ctx := context.Background()
	tests := []struct {
		name   string
		c      workload.Container
		reason string
		text   string
	}{
		{"bad reference", workload.Container{Name: "c", Image: "Not A Ref"}, "InvalidImageName", "spec.containers[0].image"},
		{"missing image", workload.Container{Name: "c", Image: e.reg.Host + "/nope:1"}, "ImagePullFailed", "nope"},
		{"unreachable registry", workload.Container{Name: "c", Image: "127.0.0.1:1/busybox"}, "ImagePullFailed", "127.0.0.1:1"},
		{"missing binary", workload.Container{Name: "c", Image: e.ref, Command: []string{"/no/such/binary"}}, "StartFailed", "no/such/binary"},
		{"no name", workload.Container{Image: e.ref}, "InvalidSpec", "spec.containers[0].name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst := instance("bad", tt.c)
			st, err := r.Start(ctx, inst)
			if err == nil {
				t.Fatal("Start succeeded")
			}
			if st.Phase != runtime.PhaseFailed || st.Reason != tt.reason || !strings.Contains(st.Message, tt.text) {
				t.Errorf("status = %+v, want FAILED %s mentioning %q", st, tt.reason, tt.text)
			}
			e.assertGone(t, r, inst.ID)
		})
	}
	// A second container failing removes the first, already running.
	inst := instance("half", workload.Container{Name: "ok", Image: e.ref, Command: []string{"sleep", "3600"}},
		workload.Container{Name: "broken", Image: e.ref, Command: []string{"/no/such/binary"}})
	if _, err := r.Start(ctx, inst); err == nil {
		t.Fatal("Start succeeded")
	}
	e.assertGone(t, r, inst.ID)
	for _, s := range e.rep.all {
		if s.Phase == runtime.PhaseExited {
			t.Errorf("rolled-back pod reported %+v", s)
		}
	}
}

func TestProgressReported(t *testing.T) {
	e := setup(t)
	r := e.runtime(t)
	inst := instance("p", workload.Container{Name: "c", Image: e.ref, Command: []string{"sleep", "60"}})
	if _, err := r.Start(context.Background(), inst); err != nil {
		t.Fatal(err)
	}
	defer r.Stop(context.Background(), inst)
	e.rep.mu.Lock()
	defer e.rep.mu.Unlock()
	var msgs []string
	for _, s := range e.rep.all {
		if s.InstanceID == inst.ID && s.Phase == runtime.PhaseCreating {
			msgs = append(msgs, s.Message)
		}
	}
	if !strings.Contains(strings.Join(msgs, "\n"), "layer 1/1") {
		t.Errorf("progress = %q", msgs)
	}
}

// fakeExposer records exposures.
type fakeExposer struct {
	mu      sync.Mutex
	exposed map[string][]workload.PortMapping
	ips     map[string]netip.Addr
	fail    bool

	onExpose func(id string) // called by Expose once it succeeded
}

func (f *fakeExposer) Expose(ctx context.Context, id string, ip netip.Addr, ports []workload.PortMapping) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return errors.New("no iptables today")
	}
	f.exposed[id] = ports
	f.ips[id] = ip
	if f.onExpose != nil {
		f.onExpose(id)
	}
	return nil
}

func (f *fakeExposer) Unexpose(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.exposed, id)
	return nil
}

func TestExposer(t *testing.T) {
	e := setup(t)
	ex := &fakeExposer{exposed: map[string][]workload.PortMapping{}, ips: map[string]netip.Addr{}}
	e.cfg.Exposer = ex
	r := e.runtime(t)
	ctx := context.Background()
	inst := instance("web", workload.Container{Name: "web", Image: e.ref, Command: []string{"httpd", "-f", "-p", "8080", "-h", "/www"},
		Ports: workload.PortList{{Port: 30080, TargetPort: 8080}, {TargetPort: 9999}}})
	st, err := r.Start(ctx, inst)
	if err != nil {
		t.Fatal(err)
	}
	want := []workload.PortMapping{{Port: 30080, TargetPort: 8080}}
	if len(st.Ports) != 1 || st.Ports[0] != want[0] {
		t.Errorf("status ports = %v, want %v", st.Ports, want)
	}
	if got := ex.exposed[inst.ID]; len(got) != 1 || got[0] != want[0] || ex.ips[inst.ID].String() != st.IP {
		t.Errorf("exposed %v at %s", got, ex.ips[inst.ID])
	}
	if err := r.Stop(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if _, ok := ex.exposed[inst.ID]; ok {
		t.Error("not unexposed on stop")
	}
	// Exposure failing fails the start and rolls back.
	ex.fail = true
	inst2 := instance("web", inst.Workload.Spec.Containers...)
	if _, err := r.Start(ctx, inst2); err == nil || !strings.Contains(err.Error(), "exposing") {
		t.Errorf("Start with failing exposer: %v", err)
	}
	e.assertGone(t, r, inst2.ID)
}

func TestRecoverAdoptsAndCleans(t *testing.T) {
	e := setup(t)
	r1 := e.runtime(t)
	ctx := context.Background()
	web := instance("web", workload.Container{Name: "web", Image: e.ref, Command: []string{"httpd", "-f", "-p", "80", "-h", "/www"}})
	orphan := instance("orphan", workload.Container{Name: "c", Image: e.ref, Command: []string{"sleep", "3600"}})
	gone := instance("gone", workload.Container{Name: "c", Image: e.ref, Command: []string{"sleep", "3600"}})
	var ips = map[string]string{}
	for _, inst := range []runtime.Instance{web, orphan, gone} {
		st, err := r1.Start(ctx, inst)
		if err != nil {
			t.Fatal(err)
		}
		ips[inst.ID] = st.IP
	}
	// The riklet goes away; the containers do not. "gone" dies meanwhile.
	r1.Close()
	if err := r1.ctrs.Kill(ctx, runcID(gone.ID, "c"), syscall.SIGKILL, false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)

	r2 := e.runtime(t)
	statuses, err := r2.Recover(ctx, []runtime.Instance{web, gone})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]runtime.Status{}
	for _, s := range statuses {
		byID[s.InstanceID] = s
	}
	if s := byID[web.ID]; s.Phase != runtime.PhaseRunning || s.IP != ips[web.ID] {
		t.Errorf("web after recover = %+v, want RUNNING at %s", s, ips[web.ID])
	}
	if s := byID[gone.ID]; s.Phase != runtime.PhaseExited {
		t.Errorf("gone after recover = %+v, want EXITED", s)
	}
	e.assertGone(t, r2, orphan.ID)
	if body, err := httpGet(e.host, net.JoinHostPort(ips[web.ID], "80"), "/index.html"); err != nil || body != "hello from rik\n" {
		t.Errorf("adopted pod not reachable: %q, %v", body, err)
	}
	// Starting an adopted pod is a no-op; its exit is still seen.
	if st, err := r2.Start(ctx, web); err != nil || st.IP != ips[web.ID] {
		t.Errorf("Start of adopted pod = %+v, %v", st, err)
	}
	if err := r2.ctrs.Kill(ctx, runcID(web.ID, "web"), syscall.SIGKILL, false); err != nil {
		t.Fatal(err)
	}
	if st := e.rep.waitExit(t, web.ID); st.ExitCode != nil || st.Reason != api.ReasonUnknown {
		t.Errorf("adopted exit = %+v", st)
	}
	for _, inst := range []runtime.Instance{web, gone} {
		if err := r2.Stop(ctx, inst); err != nil {
			t.Fatal(err)
		}
		e.assertGone(t, r2, inst.ID)
	}
}

func TestNewWithoutRunc(t *testing.T) {
	_, err := New(context.Background(), Config{StateDir: t.TempDir(), RuncBinary: "/no/such/runc"}, nil)
	if err == nil || !strings.Contains(err.Error(), "runc not found") {
		t.Errorf("New = %v, want runc not found", err)
	}
}

func TestLogsFollowAndRotation(t *testing.T) {
	e := setup(t)
	e.cfg.LogMaxSize = 4096
	r := e.runtime(t)
	ctx := context.Background()
	inst := instance("chatty", workload.Container{Name: "c", Image: e.ref, Command: []string{"sh", "-c",
		`i=0; while [ $i -lt 300 ]; do echo "line $i"; i=$((i+1)); done; sleep 1.5; echo last; exec sleep 3600`}})
	if _, err := r.Start(ctx, inst); err != nil {
		t.Fatal(err)
	}
	defer r.Stop(ctx, inst)
	// Follow: returns what comes next; stops with ctx.
	fctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(r.Logs(fctx, inst, runtime.LogOptions{Follow: true, Tail: 1}, pw))
	}()
	sc := bufio.NewScanner(pr)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if sc.Text() == "last" {
			cancel()
			break
		}
	}
	if len(lines) == 0 || lines[len(lines)-1] != "last" {
		t.Fatalf("follow got %d lines, last %q", len(lines), lines)
	}
	// ~3 KB then more: rotated once above 4 KiB? The total is below: no .1.
	// Push the log over the limit and wait for rotation.
	path := filepath.Join(r.logDir(inst.ID), "c.log")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(strings.Repeat("z", 5000) + "\n")
	f.Close()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path + ".1"); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() > 4096 {
		t.Fatalf("log not rotated: %v", err)
	}
	// Tail reads through the rotated file.
	var out bytes.Buffer
	if err := r.Logs(ctx, inst, runtime.LogOptions{Tail: 2}, &out); err != nil {
		t.Fatal(err)
	}
	if want := "last\n" + strings.Repeat("z", 5000) + "\n"; out.String() != want {
		t.Errorf("tail 2 after rotation = %.40q...", out.String())
	}
	if err := r.Logs(ctx, inst, runtime.LogOptions{Container: "nope"}, &out); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("logs of unknown container: %v", err)
	}
}

func TestStopGraceful(t *testing.T) {
	e := setup(t)
	e.cfg.StopGrace = 5 * time.Second
	r := e.runtime(t)
	ctx := context.Background()
	inst := instance("polite", workload.Container{Name: "c", Image: e.ref, Command: []string{"sh", "-c",
		`trap 'echo got-term; exit 0' TERM; echo ready; while true; do sleep 0.05; done`}})
	if _, err := r.Start(ctx, inst); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ { // the trap is set once "ready" is out
		var out bytes.Buffer
		r.Logs(ctx, inst, runtime.LogOptions{}, &out)
		if strings.Contains(out.String(), "ready") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	began := time.Now()
	if err := r.Stop(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(began); d > 3*time.Second {
		t.Errorf("Stop took %s: SIGTERM not delivered or not waited for", d)
	}
	var out bytes.Buffer
	if err := r.Logs(ctx, inst, runtime.LogOptions{}, &out); err != nil || !strings.Contains(out.String(), "got-term") {
		t.Errorf("logs after stop = %q, %v", out.String(), err)
	}
	e.assertGone(t, r, inst.ID)
	if err := r.Forget(inst.ID); err != nil {
		t.Fatal(err)
	}
	if err := r.Logs(ctx, inst, runtime.LogOptions{}, &out); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("logs after Forget: %v", err)
	}
}

// A riklet that dies right after exposing a pod's ports must find them in
// the pod's record, or the ports stay exposed after the pod is stopped.
func TestExposedPortsRecordedBeforeExposing(t *testing.T) {
	e := setup(t)
	ex := &fakeExposer{exposed: map[string][]workload.PortMapping{}, ips: map[string]netip.Addr{}}
	e.cfg.Exposer = ex
	r1 := e.runtime(t)
	ctx := context.Background()
	inst := instance("web", workload.Container{Name: "web", Image: e.ref, Command: []string{"sleep", "3600"},
		Ports: workload.PortList{{Port: 30081, TargetPort: 8080}}})
	record := filepath.Join(r1.podDir(inst.ID), "pod.json")
	var atExpose []byte
	ex.onExpose = func(string) { atExpose, _ = os.ReadFile(record) }
	if _, err := r1.Start(ctx, inst); err != nil {
		t.Fatal(err)
	}
	// The riklet dies as Expose returns: its record is what it was then.
	r1.Close()
	ex.onExpose = nil
	if err := os.WriteFile(record, atExpose, 0o600); err != nil {
		t.Fatal(err)
	}
	r2 := e.runtime(t)
	if _, err := r2.Recover(ctx, []runtime.Instance{inst}); err != nil {
		t.Fatal(err)
	}
	if err := r2.Stop(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if got, ok := ex.exposed[inst.ID]; ok {
		t.Errorf("ports %v still exposed after the pod was stopped", got)
	}
	e.assertGone(t, r2, inst.ID)
}

// When `runc run` does not return in StartWait, the container's init, left
// to the riklet (a subreaper), is stopped and reaped: no zombie stays.
func TestStartTimeoutReapsInit(t *testing.T) {
	e := setup(t)
	real, err := exec.LookPath("runc")
	if err != nil {
		t.Fatal(err)
	}
	// A runc whose `run` starts the container, then hangs.
	slow := filepath.Join(t.TempDir(), "slow-runc")
	script := "#!/bin/sh\n" + real + ` "$@"; rc=$?
for a in "$@"; do [ "$a" = run ] && exec sleep 30; done
exit $rc
`
	if err := os.WriteFile(slow, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	e.cfg.RuncBinary = slow
	e.cfg.StartWait = 5 * time.Second // well above what runc run takes
	r := e.runtime(t)
	for _, cmd := range [][]string{{"sleep", "3600"}, {"true"}} { // still running, or ended
		inst := instance("slow", workload.Container{Name: "c", Image: e.ref, Command: cmd})
		if _, err := r.Start(context.Background(), inst); err == nil {
			t.Fatal("Start succeeded with a runc that hangs")
		}
		e.assertGone(t, r, inst.ID)
	}
}

// Stop with a context already done returns an error instead of waiting
// forever for the container to end by itself; a later Stop removes all.
func TestStopWithCancelledContext(t *testing.T) {
	e := setup(t)
	r := e.runtime(t)
	inst := instance("stubborn", workload.Container{Name: "c", Image: e.ref, Command: []string{"sleep", "3600"}})
	if _, err := r.Start(context.Background(), inst); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan error, 1)
	go func() { done <- r.Stop(cctx, inst) }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Stop with a cancelled context succeeded, but could not stop the container")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Stop with a cancelled context hangs")
	}
	// Issue 8 (3): the container still runs, so its network and address
	// lease stay: another pod must not get its address.
	owners, err := r.net.Owners()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(owners, inst.ID) {
		t.Errorf("network of %s released while its container may still run (owners %v)", inst.ID, owners)
	}
	if err := r.Stop(context.Background(), inst); err != nil {
		t.Fatal(err)
	}
	e.assertGone(t, r, inst.ID)
}

// Found by the chaos suite: a `runc run` killed under CPU starvation left
// runc's directory of the container without a state; every later start
// failed ("container with given ID already exists") and the pod never ran
// again. Stop removes such a leftover.
func TestStopRemovesUnloadableContainer(t *testing.T) {
	e := setup(t)
	r := e.runtime(t)
	ctx := context.Background()
	inst := instance("broken", workload.Container{Name: "c", Image: e.ref, Command: []string{"sleep", "3600"}})
	dir := filepath.Join(r.cfg.RuncRoot, runcID(inst.ID, "c"))
	if err := os.MkdirAll(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := r.Stop(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("runc's directory of the broken container is still there: %v", err)
	}
	if _, err := r.Start(ctx, inst); err != nil {
		t.Fatalf("start after a broken runc run: %v", err)
	}
	if err := r.Stop(ctx, inst); err != nil {
		t.Fatal(err)
	}
	e.assertGone(t, r, inst.ID)
}
