package pod

// The pod lifecycle (start and its rollback, exits, stop, recovery) against
// a fake node (fake_test.go): no root, no runc. The same paths run for
// real, as root, in lifecycle_root_test.go.

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/riklet/image"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/testutil/ociimage"
	"github.com/rik-org/rik/internal/workload"
)

type fakeEnv struct {
	node   *fakeNode
	ref    string // a small image in an in-process registry
	rep    *reports
	cfg    Config
	images *image.Store
}

func newFakeEnv(t *testing.T) *fakeEnv {
	t.Helper()
	layer, err := ociimage.Layer([]ociimage.File{
		{Name: "etc/", Typeflag: '5'},
		{Name: "etc/passwd", Body: []byte("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n")},
		{Name: "etc/group", Body: []byte("root:x:0:\napp:x:1000:\n")},
	})
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.Config(img, v1.Config{Cmd: []string{"serve"}})
	if err != nil {
		t.Fatal(err)
	}
	reg := ociimage.NewRegistry(t)
	e := &fakeEnv{node: newFakeNode(), ref: reg.Push(t, "tiny:1", img), rep: newReports()}
	state := t.TempDir()
	e.cfg = Config{StateDir: state, StopGrace: 50 * time.Millisecond, Logger: testLogger(t)}
	e.cfg.Exposer = e.node
	e.cfg.setDefaults()
	if e.images, err = image.Open(filepath.Join(state, "images"), image.Options{}); err != nil {
		t.Fatal(err)
	}
	return e
}

// runtime returns a Runtime on the fake node, closed when the test ends.
func (e *fakeEnv) runtime(t *testing.T) *Runtime {
	t.Helper()
	r, err := newRuntime(context.Background(), e.cfg, e.rep.report, e.images, e.node.host(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// ctr is a container of the test image running words (see fakeNode).
func (e *fakeEnv) ctr(name string, words ...string) workload.Container {
	return workload.Container{Name: name, Image: e.ref, Command: words}
}

// assertGone checks that nothing of pod id is left on the node.
func (e *fakeEnv) assertGone(t *testing.T, r *Runtime, id string) {
	t.Helper()
	if left := e.node.leftovers(id, e.cfg.CgroupDir); len(left) > 0 {
		t.Errorf("left behind by %s: %v", id, left)
	}
	if _, err := os.Stat(r.podDir(id)); !os.IsNotExist(err) {
		t.Errorf("pod dir of %s left behind: %v", id, err)
	}
	if z := e.node.zombies(); len(z) > 0 {
		t.Errorf("zombies left: %v", z)
	}
	if r.running(id) {
		t.Errorf("%s still counted as running", id)
	}
}

// exited reports whether an exit of id was reported.
func (e *fakeEnv) exited(id string) bool {
	e.rep.mu.Lock()
	defer e.rep.mu.Unlock()
	return slices.ContainsFunc(e.rep.all, func(s runtime.Status) bool { return s.InstanceID == id && s.Phase == runtime.PhaseExited })
}

func TestFakeStartStop(t *testing.T) {
	e := newFakeEnv(t)
	r := e.runtime(t)
	ctx := context.Background()
	inst := instance("web", e.ctr("web", "print:hello"), e.ctr("side"))
	inst.Workload.Spec.Containers[0].Ports = workload.PortList{{Port: 30080, TargetPort: 80}}
	st, err := r.Start(ctx, inst)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != runtime.PhaseRunning || st.IP != "10.63.0.2" || st.Message != "2/2 containers running" || len(st.Ports) != 1 {
		t.Fatalf("status = %+v", st)
	}
	if again, err := r.Start(ctx, inst); err != nil || again.IP != st.IP {
		t.Errorf("second Start = %+v, %v", again, err)
	}
	if e.node.exposed[inst.ID][0] != (workload.PortMapping{Port: 30080, TargetPort: 80}) {
		t.Errorf("exposed %v", e.node.exposed[inst.ID])
	}
	var logs bytes.Buffer
	if err := r.Logs(ctx, inst, runtime.LogOptions{}, &logs); err != nil || logs.String() != "hello\n" {
		t.Errorf("logs = %q, %v", logs.String(), err)
	}
	if err := r.Stop(ctx, inst); err != nil {
		t.Fatal(err)
	}
	e.assertGone(t, r, inst.ID)
	for _, name := range []string{"web", "side"} {
		if got := e.node.signalsOf(runcID(inst.ID, name)); !slices.Equal(got, []syscall.Signal{syscall.SIGTERM}) {
			t.Errorf("%s got signals %v, want SIGTERM alone", name, got)
		}
	}
	if err := r.Stop(ctx, inst); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	// Stop keeps the logs, Forget removes them.
	logs.Reset()
	if err := r.Logs(ctx, inst, runtime.LogOptions{}, &logs); err != nil || logs.String() != "hello\n" {
		t.Errorf("logs after stop = %q, %v", logs.String(), err)
	}
	if err := r.Forget(inst.ID); err != nil {
		t.Fatal(err)
	}
	if err := r.Logs(ctx, inst, runtime.LogOptions{}, &logs); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("logs after Forget: %v", err)
	}
	if e.exited(inst.ID) {
		t.Error("a stopped pod reported an exit")
	}
}

// A failure at any step of Start (network, each rootfs, each container,
// exposure) leaves nothing behind and reports no exit.
func TestFakeStartRollsBackAtEveryStep(t *testing.T) {
	e := newFakeEnv(t)
	r := e.runtime(t)
	ctx := context.Background()
	spec := []workload.Container{e.ctr("a"), e.ctr("b", "ignore-term")}
	spec[1].Ports = workload.PortList{{Port: 30081, TargetPort: 81}}
	var steps []string
	for k := 1; ; k++ {
		inst := instance("rb", spec...)
		e.node.mu.Lock()
		e.node.steps, e.node.failStep = nil, k
		e.node.mu.Unlock()
		st, err := r.Start(ctx, inst)
		e.node.mu.Lock()
		steps = e.node.steps
		e.node.mu.Unlock()
		if err == nil {
			if k != 7 { // network, mount and run of a and b, expose: 6
				t.Errorf("Start succeeded once %d steps could fail (%v), want 6", k-1, steps)
			}
			if err := r.Stop(ctx, inst); err != nil {
				t.Fatal(err)
			}
			e.assertGone(t, r, inst.ID)
			break
		}
		if len(steps) < k {
			t.Fatalf("Start failed before step %d (%v): %+v, %v", k, steps, st, err)
		}
		t.Logf("failing step %d: %s", k, steps[k-1])
		if !errors.Is(err, errInjected) || st.Phase != runtime.PhaseFailed || st.Reason != api.ReasonStartFailed {
			t.Errorf("step %d (%s): Start = %+v, %v; want FAILED %s", k, steps[k-1], st, err, api.ReasonStartFailed)
		}
		e.assertGone(t, r, inst.ID)
		if e.exited(inst.ID) {
			t.Errorf("step %d (%s): rolled-back pod reported an exit", k, steps[k-1])
		}
		if k > 10 {
			t.Fatal("Start never succeeds")
		}
	}
	// What ran before the failure was stopped, gracefully first.
	for rid, sigs := range e.node.signals {
		if len(sigs) == 0 || sigs[0] != syscall.SIGTERM {
			t.Errorf("%s got %v, want SIGTERM first", rid, sigs)
		}
	}
}

func TestFakeStartFailures(t *testing.T) {
	e := newFakeEnv(t)
	e.cfg.StartWait = 100 * time.Millisecond // hang-run gives up after this
	r := e.runtime(t)
	tests := []struct {
		name   string
		cs     []workload.Container
		reason string
		text   string
	}{
		{"missing binary", []workload.Container{e.ctr("ok"), e.ctr("broken", "/no/such/binary", "fail-run")}, api.ReasonStartFailed, "no/such/binary"},
		{"runc run hangs", []workload.Container{e.ctr("slow", "hang-run")}, api.ReasonStartFailed, "runc run"},
		{"bad reference", []workload.Container{{Name: "c", Image: "Not A Ref"}}, api.ReasonInvalidImageName, "spec.containers[0].image"},
		{"missing image", []workload.Container{{Name: "c", Image: strings.Replace(e.ref, "tiny", "nope", 1)}}, api.ReasonImagePullFailed, "nope"},
		{"no name", []workload.Container{{Image: e.ref}}, api.ReasonInvalidSpec, "spec.containers[0].name"},
		{"privileged", []workload.Container{{Name: "c", Image: e.ref, SecurityContext: &workload.SecurityContext{Privileged: true}}}, api.ReasonPrivilegedRefused, "privileged"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst := instance("bad", tt.cs...)
			st, err := r.Start(context.Background(), inst)
			if err == nil {
				t.Fatal("Start succeeded")
			}
			if st.Phase != runtime.PhaseFailed || st.Reason != tt.reason || !strings.Contains(st.Message, tt.text) {
				t.Errorf("status = %+v, want FAILED %s mentioning %q", st, tt.reason, tt.text)
			}
			e.assertGone(t, r, inst.ID)
			if e.exited(inst.ID) {
				t.Error("a failed start reported an exit")
			}
		})
	}
}

func TestFakeExitReported(t *testing.T) {
	e := newFakeEnv(t)
	r := e.runtime(t)
	ctx := context.Background()
	tests := []struct {
		name   string
		words  []string
		kill   bool // from outside, as the OOM killer does
		oom    bool
		code   int
		reason string
	}{
		{name: "error", words: []string{"print:bye", "exit:3"}, code: 3, reason: api.ReasonError},
		{name: "completed", words: []string{"exit:0"}, code: 0, reason: api.ReasonCompleted},
		{name: "killed", kill: true, code: 137, reason: api.ReasonError},
		{name: "oom", kill: true, oom: true, code: 137, reason: api.ReasonOOMKilled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst := instance("job", e.ctr("main", tt.words...))
			if tt.oom {
				e.node.mu.Lock()
				e.node.oom[r.cgroup(inst.ID, "main")] = true
				e.node.mu.Unlock()
			}
			if _, err := r.Start(ctx, inst); err != nil {
				t.Fatal(err)
			}
			if tt.kill {
				e.node.exit(runcID(inst.ID, "main"), 137)
			}
			st := e.rep.waitExit(t, inst.ID)
			if st.ExitCode == nil || *st.ExitCode != tt.code || st.Reason != tt.reason || !strings.Contains(st.Message, "main") {
				t.Errorf("exit = %+v (code %v), want %d %s naming the container", st, deref(st.ExitCode), tt.code, tt.reason)
			}
			if r.running(inst.ID) {
				t.Error("an exited pod is running")
			}
			// Start again without Stop starts afresh; Stop removes all.
			if _, err := r.Start(ctx, instanceWithID(inst.ID, e.ctr("main"))); err != nil {
				t.Fatal(err)
			}
			if err := r.Stop(ctx, inst); err != nil {
				t.Fatal(err)
			}
			e.assertGone(t, r, inst.ID)
		})
	}
}

func instanceWithID(id string, cs ...workload.Container) runtime.Instance {
	inst := instance("again", cs...)
	inst.ID = id
	return inst
}

// Stop sends SIGTERM, waits StopGrace, then SIGKILL to all processes of
// a container that did not end.
func TestFakeStopGraceThenKill(t *testing.T) {
	e := newFakeEnv(t)
	r := e.runtime(t)
	ctx := context.Background()
	inst := instance("stop", e.ctr("polite"), e.ctr("stubborn", "ignore-term"))
	if _, err := r.Start(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if err := r.Stop(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if got := e.node.signalsOf(runcID(inst.ID, "polite")); !slices.Equal(got, []syscall.Signal{syscall.SIGTERM}) {
		t.Errorf("polite got %v, want SIGTERM alone", got)
	}
	if got := e.node.signalsOf(runcID(inst.ID, "stubborn")); !slices.Equal(got, []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL}) {
		t.Errorf("stubborn got %v, want SIGTERM then SIGKILL", got)
	}
	e.assertGone(t, r, inst.ID)
	if e.exited(inst.ID) {
		t.Error("a stopped pod reported an exit")
	}
}

// A Stop that cannot stop a container (its context is done) fails and
// keeps the pod's network and address; a later Stop removes all.
func TestFakeStopCancelledKeepsNetwork(t *testing.T) {
	e := newFakeEnv(t)
	r := e.runtime(t)
	inst := instance("stubborn", e.ctr("c", "ignore-term"))
	if _, err := r.Start(context.Background(), inst); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Stop(cctx, inst); err == nil {
		t.Error("Stop with a cancelled context succeeded, but could not stop the container")
	}
	if owners, _ := e.node.Owners(); !slices.Contains(owners, inst.ID) {
		t.Errorf("network of %s released while its container may still run (owners %v)", inst.ID, owners)
	}
	if left := e.node.leftovers(inst.ID, e.cfg.CgroupDir); !slices.Contains(left, "running init of "+runcID(inst.ID, "c")) {
		t.Errorf("the container was not left running: %v", left)
	}
	if err := r.Stop(context.Background(), inst); err != nil {
		t.Fatal(err)
	}
	e.assertGone(t, r, inst.ID)
}

// A record runc keeps but cannot load (a killed `runc run`) is removed by
// Stop, so the pod can start again.
func TestFakeStopRemovesUnloadableContainer(t *testing.T) {
	e := newFakeEnv(t)
	r := e.runtime(t)
	ctx := context.Background()
	inst := instance("broken", e.ctr("c"))
	e.node.mu.Lock()
	e.node.records[runcID(inst.ID, "c")] = true
	e.node.mu.Unlock()
	if err := r.Stop(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if e.node.HasRecord(runcID(inst.ID, "c")) {
		t.Fatal("the broken record is still there")
	}
	if _, err := r.Start(ctx, inst); err != nil {
		t.Fatalf("start after a broken runc run: %v", err)
	}
	if err := r.Stop(ctx, inst); err != nil {
		t.Fatal(err)
	}
	e.assertGone(t, r, inst.ID)
}

// After a riklet restart, Recover adopts the owned pods still running,
// reports the others exited, and removes all of the pods nobody owns.
func TestFakeRecoverAdoptsAndCleans(t *testing.T) {
	e := newFakeEnv(t)
	r1 := e.runtime(t)
	ctx := context.Background()
	web := instance("web", e.ctr("web"))
	web.Workload.Spec.Containers[0].Ports = workload.PortList{{Port: 30082, TargetPort: 80}}
	orphan := instance("orphan", e.ctr("c", "ignore-term"))
	gone := instance("gone", e.ctr("c"))
	ips := map[string]string{}
	for _, inst := range []runtime.Instance{web, orphan, gone} {
		st, err := r1.Start(ctx, inst)
		if err != nil {
			t.Fatal(err)
		}
		ips[inst.ID] = st.IP
	}
	// The riklet goes away; the containers do not. "gone" dies meanwhile.
	r1.Close()
	e.node.restart()
	e.node.exit(runcID(gone.ID, "c"), 1)
	e.node.Unexpose(ctx, web.ID) // as a rebuilt firewall would be

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
	if _, ok := e.node.exposed[web.ID]; !ok {
		t.Error("adopted pod not exposed again")
	}
	if s := byID[gone.ID]; s.Phase != runtime.PhaseExited || s.Reason != api.ReasonUnknown {
		t.Errorf("gone after recover = %+v, want EXITED %s", s, api.ReasonUnknown)
	}
	e.assertGone(t, r2, orphan.ID)
	if _, err := os.Stat(r2.logDir(orphan.ID)); !os.IsNotExist(err) {
		t.Errorf("logs of the orphan kept: %v", err)
	}
	// Starting an adopted pod is a no-op; its exit is still seen, with an
	// unknown code (it is not the new riklet's child).
	if st, err := r2.Start(ctx, web); err != nil || st.IP != ips[web.ID] {
		t.Errorf("Start of adopted pod = %+v, %v", st, err)
	}
	e.node.exit(runcID(web.ID, "web"), 0)
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

// A riklet that dies right after exposing a pod's ports finds them in the
// pod's record: they are unexposed when the pod is stopped.
func TestFakeExposedPortsRecordedBeforeExposing(t *testing.T) {
	e := newFakeEnv(t)
	r1 := e.runtime(t)
	ctx := context.Background()
	inst := instance("web", e.ctr("web"))
	inst.Workload.Spec.Containers[0].Ports = workload.PortList{{Port: 30083, TargetPort: 8080}}
	record := filepath.Join(r1.podDir(inst.ID), "pod.json")
	var atExpose []byte
	e.node.onExpose = func(string) { atExpose, _ = os.ReadFile(record) }
	if _, err := r1.Start(ctx, inst); err != nil {
		t.Fatal(err)
	}
	// The riklet dies as Expose returns: its record is what it was then.
	r1.Close()
	e.node.restart()
	e.node.onExpose = nil
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
	e.assertGone(t, r2, inst.ID)
}
