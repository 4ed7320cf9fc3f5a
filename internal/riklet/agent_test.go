package riklet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/workerpb"
	rt "github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/riklet/runtime/runtimetest"
	"github.com/rik-org/rik/internal/workload"
)

func TestRegistrationAndHeartbeat(t *testing.T) {
	sched := startScheduler(t, "127.0.0.1:0")
	dir := t.TempDir()
	cfg, pods := testConfig(t, sched, dir)
	broken := &runtimetest.Factory{Kind: workload.KindFunction, Err: errors.New("no /dev/kvm")}
	cfg.Runtimes = append(cfg.Runtimes, broken.New)
	cfg.MasterAddr = "http://" + sched.addr + "/"
	startNode(t, cfg, pods)
	reg := waitReady(t, sched, 1)

	if reg.GetHostname() != "node-1" {
		t.Errorf("hostname = %q", reg.GetHostname())
	}
	if got := reg.GetKinds(); !slices.Equal(got, []string{"pod"}) {
		t.Errorf("kinds = %v, want [pod] (function runtime failed)", got)
	}
	c := reg.GetCapacity()
	if c.GetCpuMillis() != int64(runtime.NumCPU())*1000 || c.GetMemoryMib() <= 0 || c.GetDiskMib() <= 0 {
		t.Errorf("capacity = %v", c)
	}
	if reg.GetLabels()["zone"] != "a" {
		t.Errorf("labels = %v", reg.GetLabels())
	}
	if reg.GetAddress() == "" || len(reg.GetInstances()) != 0 {
		t.Errorf("address %q, instances %v", reg.GetAddress(), reg.GetInstances())
	}

	sched.mu.Lock()
	hb := sched.heartbeats[0]
	sched.mu.Unlock()
	if hb.GetStatus() != commonpb.ResourceStatus_RUNNING || !slices.Equal(hb.GetKinds(), []string{"pod"}) ||
		hb.GetCapacity().GetMemoryMib() <= 0 || hb.GetUsage().GetMemoryMib() <= 0 {
		t.Errorf("heartbeat = %v", hb)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(hb.GetMetrics()), &m); err != nil || m["cpu"] == nil || m["disks"] == nil {
		t.Errorf("metrics JSON %q: %v", hb.GetMetrics(), err)
	}
	// Heartbeats keep coming.
	eventually(t, func() bool { return sched.heartbeatCount() >= 3 }, func() string { return "heartbeats" })
}

func TestCreateThenDestroy(t *testing.T) {
	sched, n := setup(t)
	sched.create("i1", podDef("web", "Always"))

	run := sched.waitStatus(t, "i1", is(commonpb.ResourceStatus_RUNNING))
	got := statusNames(sched.statusesOf("i1"))
	if !slices.Equal(got, []string{"CREATING", "RUNNING"}) {
		t.Errorf("statuses = %v, want CREATING RUNNING", got)
	}
	if !strings.HasPrefix(run.GetIp(), "10.99.") || run.GetWorkloadId() != "wl-i1" || len(run.GetPorts()) != 1 ||
		run.GetPorts()[0].GetPort() != 8080 || run.GetTimingsMs()["start"] != 1 {
		t.Errorf("running status = %v", run)
	}
	fi, err := os.Stat(filepath.Join(n.cfg.StateDir, "ledger.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ledger file: %v %v", fi, err)
	}
	l := waitLedger(t, n.cfg.StateDir, func(l ledgerFile) bool {
		return len(l.Instances) == 1 && l.Instances[0].Last.Status == workload.StatusRunning
	})
	if e := l.Instances[0]; e.Name != "name-i1" || e.WorkloadID != "wl-i1" || e.Kind != workload.KindPod || e.Last.IP != run.GetIp() {
		t.Fatalf("ledger = %+v", l)
	}
	if r := n.fake(t).Running(); !slices.Equal(r, []string{"i1"}) {
		t.Fatalf("fake runs %v", r)
	}

	// A duplicate CREATE re-reports, it does not start again.
	sched.create("i1", podDef("web", "Always"))
	eventually(t, func() bool { return len(sched.statusesOf("i1")) == 3 }, func() string { return "re-report" })
	if n.fake(t).Starts() != 1 {
		t.Errorf("starts = %d, want 1", n.fake(t).Starts())
	}

	sched.destroy("i1")
	sched.waitStatus(t, "i1", is(commonpb.ResourceStatus_TERMINATED))
	got = statusNames(sched.statusesOf("i1"))
	if !slices.Equal(got[3:], []string{"DESTROYING", "TERMINATED(Destroyed)"}) {
		t.Errorf("statuses = %v", got)
	}
	if n.fake(t).Stops() != 1 || len(n.fake(t).Running()) != 0 {
		t.Errorf("stops %d, running %v", n.fake(t).Stops(), n.fake(t).Running())
	}
	if got := n.fake(t).Forgotten(); !slices.Equal(got, []string{"i1"}) {
		t.Errorf("forgotten %v after destroy, want [i1]", got)
	}
	waitLedger(t, n.cfg.StateDir, func(l ledgerFile) bool { return len(l.Instances) == 0 })
}

func TestDestroyUnknownInstance(t *testing.T) {
	sched, n := setup(t)
	sched.destroy("ghost")
	sched.waitStatus(t, "ghost", is(commonpb.ResourceStatus_TERMINATED))
	if n.fake(t).Stops() != 0 {
		t.Errorf("stop called for an unknown instance")
	}
}

func TestCreateRejected(t *testing.T) {
	sched, n := setup(t)
	sched.create("f1", functionDef)
	sched.create("bad", `{"kind":"Pod"`)

	m := sched.waitStatus(t, "f1", is(commonpb.ResourceStatus_FAILED))
	if m.GetReason() != api.ReasonNoRuntime || m.GetMessage() != `this node has no runtime for kind "function"` {
		t.Errorf("status = %v", m)
	}
	m = sched.waitStatus(t, "bad", is(commonpb.ResourceStatus_FAILED))
	if m.GetReason() != api.ReasonInvalidDefinition || m.GetMessage() == "" {
		t.Errorf("status = %v", m)
	}
	if n.fake(t).Starts() != 0 || len(readLedger(t, n.cfg.StateDir).Instances) != 0 {
		t.Errorf("rejected orders reached the runtime or the ledger")
	}
}

type reasonErr struct{}

func (reasonErr) Error() string  { return "pulling alpine:3: 404" }
func (reasonErr) Reason() string { return api.ReasonImagePullFailed }

func TestStartFailure(t *testing.T) {
	sched, n := setup(t)
	for _, tc := range []struct {
		id, reason string
		err        error
	}{
		{"s1", "StartFailed", errors.New("boom")},
		{"s2", api.ReasonImagePullFailed, fmt.Errorf("creating: %w", reasonErr{})},
	} {
		stops := n.fake(t).Stops()
		n.fake(t).FailNext(tc.err)
		sched.create(tc.id, podDef("web", "Always"))
		m := sched.waitStatus(t, tc.id, is(commonpb.ResourceStatus_FAILED))
		if m.GetReason() != tc.reason || !strings.Contains(m.GetMessage(), tc.err.Error()) {
			t.Errorf("%s: status = %v", tc.id, m)
		}
		if got := n.fake(t).Stops(); got != stops+1 {
			t.Errorf("%s: rollback stops = %d, want %d", tc.id, got, stops+1)
		}
	}
	waitLedger(t, n.cfg.StateDir, func(l ledgerFile) bool {
		return len(l.Instances) == 2 && l.Instances[0].Last.Status == workload.StatusFailed &&
			l.Instances[1].Last.Status == workload.StatusFailed
	})
	sched.destroy("s1")
	sched.destroy("s2")
	sched.waitStatus(t, "s1", is(commonpb.ResourceStatus_TERMINATED))
	sched.waitStatus(t, "s2", is(commonpb.ResourceStatus_TERMINATED))
	waitLedger(t, n.cfg.StateDir, func(l ledgerFile) bool { return len(l.Instances) == 0 })
}

func TestProgressForwarded(t *testing.T) {
	sched, n := setup(t)
	n.fake(t).SetProgress("pulling alpine:3 (1/2 layers)")
	sched.create("p1", podDef("web", "Always"))
	sched.waitStatus(t, "p1", is(commonpb.ResourceStatus_RUNNING))
	got := sched.statusesOf("p1")
	if len(got) != 3 || got[1].GetStatus() != commonpb.ResourceStatus_CREATING || got[1].GetMessage() != "pulling alpine:3 (1/2 layers)" {
		t.Errorf("statuses = %v", got)
	}
}

func TestExitPolicies(t *testing.T) {
	sched, n := setup(t)
	for i, tc := range []struct {
		policy  string
		code    int
		restart bool
		final   commonpb.ResourceStatus
		reason  string
	}{
		{"Never", 0, false, commonpb.ResourceStatus_TERMINATED, "Completed"},
		{"Never", 3, false, commonpb.ResourceStatus_FAILED, "Error"},
		{"OnFailure", 0, false, commonpb.ResourceStatus_TERMINATED, "Completed"},
		{"OnFailure", 1, true, 0, ""},
		{"Always", 0, true, 0, ""},
		{"Always", 2, true, 0, ""},
	} {
		t.Run(fmt.Sprintf("%s-%d", tc.policy, tc.code), func(t *testing.T) {
			id := fmt.Sprintf("e%d", i)
			sched.create(id, podDef("job", tc.policy))
			sched.waitStatus(t, id, is(commonpb.ResourceStatus_RUNNING))
			f := n.fake(t)
			starts := f.Starts()
			if err := f.Exit(id, tc.code); err != nil {
				t.Fatal(err)
			}
			if !tc.restart {
				m := sched.waitStatus(t, id, func(m *commonpb.InstanceMetric) bool { return m.GetStatus().Number() == tc.final.Number() })
				if m.GetReason() != tc.reason || !m.GetHasExitCode() || m.GetExitCode() != int32(tc.code) || m.GetRestarts() != 0 {
					t.Errorf("final status = %v", m)
				}
				// The ledger keeps the ended instance.
				waitLedger(t, n.cfg.StateDir, func(l ledgerFile) bool {
					return slices.ContainsFunc(l.Instances, func(e Entry) bool {
						return e.InstanceID == id && e.Last.Status == workload.Status(tc.final.String())
					})
				})
				if f.Starts() != starts {
					t.Errorf("restarted")
				}
				return
			}
			back := sched.waitStatus(t, id, func(m *commonpb.InstanceMetric) bool { return m.GetReason() == api.ReasonBackOff })
			if back.GetStatus() != commonpb.ResourceStatus_CREATING || back.GetRestarts() != 1 || back.GetExitCode() != int32(tc.code) {
				t.Errorf("backoff status = %v", back)
			}
			again := sched.waitStatus(t, id, func(m *commonpb.InstanceMetric) bool {
				return m.GetStatus() == commonpb.ResourceStatus_RUNNING && m.GetRestarts() == 1
			})
			if again.GetIp() == "" {
				t.Errorf("restarted status = %v", again)
			}
			if f.Starts() != starts+1 || !slices.Contains(f.Running(), id) {
				t.Errorf("starts %d (want %d), running %v", f.Starts(), starts+1, f.Running())
			}
			// A second exit restarts again, restarts=2.
			if err := f.Exit(id, tc.code); err != nil {
				t.Fatal(err)
			}
			sched.waitStatus(t, id, func(m *commonpb.InstanceMetric) bool {
				return m.GetStatus() == commonpb.ResourceStatus_RUNNING && m.GetRestarts() == 2
			})
			// A restart keeps what the runtime holds (logs).
			if slices.Contains(f.Forgotten(), id) {
				t.Errorf("restart made the runtime forget %s", id)
			}
		})
	}
}

func TestDestroyDuringRestartBackoff(t *testing.T) {
	sched := startScheduler(t, "127.0.0.1:0")
	cfg, pods := testConfig(t, sched, t.TempDir())
	cfg.knobs.restartBase = time.Second // time enough to DESTROY during the backoff
	cfg.knobs.restartMax = time.Second
	n := startNode(t, cfg, pods)
	waitReady(t, sched, 1)

	sched.create("d1", podDef("web", "Always"))
	sched.waitStatus(t, "d1", is(commonpb.ResourceStatus_RUNNING))
	if err := n.fake(t).Exit("d1", 1); err != nil {
		t.Fatal(err)
	}
	sched.waitStatus(t, "d1", func(m *commonpb.InstanceMetric) bool { return m.GetReason() == api.ReasonBackOff })
	sched.destroy("d1")
	sched.waitStatus(t, "d1", is(commonpb.ResourceStatus_TERMINATED))
	time.Sleep(1200 * time.Millisecond) // past the restart delay
	if got := n.fake(t).Starts(); got != 1 {
		t.Errorf("starts = %d: a destroyed instance was restarted", got)
	}
	if r := n.fake(t).Running(); len(r) != 0 {
		t.Errorf("running %v", r)
	}
}

func TestSchedulerRestart(t *testing.T) {
	sched, n := setup(t)
	sched.create("r1", podDef("web", "Always"))
	sched.waitStatus(t, "r1", is(commonpb.ResourceStatus_RUNNING))

	addr := sched.addr
	sched.srv.Stop()
	sched2 := startScheduler(t, addr)
	reg := waitReady(t, sched2, 1)
	if len(reg.GetInstances()) != 1 || reg.GetInstances()[0].GetInstanceId() != "r1" ||
		reg.GetInstances()[0].GetStatus() != commonpb.ResourceStatus_RUNNING {
		t.Errorf("re-registration instances = %v", reg.GetInstances())
	}
	m := sched2.waitStatus(t, "r1", is(commonpb.ResourceStatus_RUNNING))
	if m.GetIp() == "" {
		t.Errorf("re-sent status = %v", m)
	}
	// Orders work on the new scheduler.
	sched2.destroy("r1")
	sched2.waitStatus(t, "r1", is(commonpb.ResourceStatus_TERMINATED))
	if n.fake(t).Stops() != 1 {
		t.Errorf("stops = %d", n.fake(t).Stops())
	}
}

func TestStatusesQueuedWhileDisconnected(t *testing.T) {
	sched, n := setup(t)
	sched.create("q1", podDef("job", "Never"))
	sched.waitStatus(t, "q1", is(commonpb.ResourceStatus_RUNNING))
	addr := sched.addr
	sched.srv.Stop()
	// The instance ends while no scheduler listens.
	if err := n.fake(t).Exit("q1", 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	sched2 := startScheduler(t, addr)
	m := sched2.waitStatus(t, "q1", is(commonpb.ResourceStatus_TERMINATED))
	if m.GetReason() != api.ReasonCompleted {
		t.Errorf("status = %v", m)
	}
}

func TestRikletRestartAdopts(t *testing.T) {
	sched := startScheduler(t, "127.0.0.1:0")
	dir := t.TempDir()
	cfg, pods := testConfig(t, sched, dir)
	n := startNode(t, cfg, pods)
	waitReady(t, sched, 1)
	sched.create("a1", podDef("web", "Always"))
	sched.create("a2", podDef("job", "Never"))
	sched.create("a3", podDef("lost", "Never"))
	sched.create("a4", podDef("lost-always", "Always"))
	for _, id := range []string{"a1", "a2", "a3", "a4"} {
		sched.waitStatus(t, id, is(commonpb.ResourceStatus_RUNNING))
	}
	if err := n.fake(t).Exit("a2", 0); err != nil {
		t.Fatal(err)
	}
	sched.waitStatus(t, "a2", is(commonpb.ResourceStatus_TERMINATED))
	n.stop(t)
	if !n.fake(t).Closed() {
		t.Errorf("runtime not closed when riklet stopped")
	}

	// While riklet is down: a3 and a4 vanish, an orphan appears.
	f, err := runtimetest.New(workload.KindPod, pods.Dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a3", "a4"} {
		if err := f.Stop(context.Background(), rt.Instance{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Plant("orphan", "orphan"); err != nil {
		t.Fatal(err)
	}

	cfg2, pods2 := testConfig(t, sched, dir)
	n2 := startNode(t, cfg2, pods2)
	reg := waitReady(t, sched, 2)
	got := map[string]*commonpb.InstanceMetric{}
	for _, m := range reg.GetInstances() {
		got[m.GetInstanceId()] = m
	}
	if got["a1"].GetStatus() != commonpb.ResourceStatus_RUNNING || got["a1"].GetIp() == "" {
		t.Errorf("a1 = %v", got["a1"])
	}
	if got["a2"].GetStatus() != commonpb.ResourceStatus_TERMINATED || got["a2"].GetReason() != api.ReasonCompleted {
		t.Errorf("a2 = %v", got["a2"])
	}
	if got["a3"].GetStatus() != commonpb.ResourceStatus_FAILED || got["a3"].GetReason() != api.ReasonLost {
		t.Errorf("a3 = %v", got["a3"])
	}
	if len(got) != 4 {
		t.Errorf("registration instances = %v", reg.GetInstances())
	}
	f2 := n2.fake(t)
	if r := f2.Removed(); !slices.Equal(r, []string{"orphan"}) {
		t.Errorf("removed = %v", r)
	}
	// a4 (Always) is restarted, a1 adopted without a restart.
	sched.waitStatus(t, "a4", func(m *commonpb.InstanceMetric) bool {
		return m.GetStatus() == commonpb.ResourceStatus_RUNNING && m.GetRestarts() == 1
	})
	if r := f2.Running(); !slices.Equal(r, []string{"a1", "a4"}) || f2.Starts() != 1 {
		t.Errorf("running %v, starts %d", r, f2.Starts())
	}
	sched.destroy("a2")
	sched.waitStatus(t, "a2", is(commonpb.ResourceStatus_TERMINATED))
}

func TestCorruptLedger(t *testing.T) {
	sched := startScheduler(t, "127.0.0.1:0")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ledger.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, pods := testConfig(t, sched, dir)
	startNode(t, cfg, pods)
	reg := waitReady(t, sched, 1)
	if len(reg.GetInstances()) != 0 {
		t.Errorf("instances = %v", reg.GetInstances())
	}
	aside, _ := filepath.Glob(filepath.Join(dir, "ledger.json.corrupt-*"))
	if len(aside) != 1 {
		t.Fatalf("corrupt ledger not moved aside: %v", aside)
	}
	if b, _ := os.ReadFile(aside[0]); string(b) != "{not json" {
		t.Errorf("moved file = %q", b)
	}
	// The node works.
	sched.create("c1", podDef("web", "Always"))
	sched.waitStatus(t, "c1", is(commonpb.ResourceStatus_RUNNING))
}

func TestLogs(t *testing.T) {
	sched, n := setup(t)
	sched.create("l1", podDef("web", "Always"))
	sched.waitStatus(t, "l1", is(commonpb.ResourceStatus_RUNNING))
	eventually(t, func() bool {
		sched.mu.Lock()
		defer sched.mu.Unlock()
		return len(sched.logHellos) == 1 && sched.logHellos[0] == "node-1"
	}, func() string { return "log stream hello" })

	logsOf := func(rid string) ([]byte, *commonpb.LogChunk, int) {
		var data []byte
		var end *commonpb.LogChunk
		var chunks int
		eventually(t, func() bool {
			sched.mu.Lock()
			defer sched.mu.Unlock()
			data, end, chunks = nil, nil, 0
			for _, c := range sched.chunks {
				if c.GetRequestId() != rid {
					continue
				}
				if c.GetEof() {
					end = c
					continue
				}
				if len(c.GetData()) > maxLogChunk {
					t.Errorf("chunk of %d bytes", len(c.GetData()))
				}
				chunks++
				data = append(data, c.GetData()...)
			}
			return end != nil
		}, func() string { return "eof of " + rid })
		return data, end, chunks
	}

	sched.logReqs <- &commonpb.LogRequest{RequestId: "r1", InstanceId: "l1"}
	sched.logReqs <- &commonpb.LogRequest{RequestId: "r2", InstanceId: "nope"}
	sched.logReqs <- &commonpb.LogRequest{RequestId: "r3", InstanceId: "l1", Tail: 1}
	data, end, _ := logsOf("r1")
	if string(data) != "name-l1 line 1\nname-l1 line 2\nname-l1 line 3\n" || end.GetError() != "" {
		t.Errorf("r1: %q, end %v", data, end)
	}
	if _, end, _ = logsOf("r2"); end.GetError() != "instance not found" {
		t.Errorf("r2 end = %v", end)
	}
	if data, _, _ = logsOf("r3"); string(data) != "name-l1 line 3\n" {
		t.Errorf("r3 = %q", data)
	}

	big := bytes.Repeat([]byte("0123456789abcdef"), 5000) // 80000 bytes
	n.fake(t).SetLogs(big)
	sched.logReqs <- &commonpb.LogRequest{RequestId: "r4", InstanceId: "l1"}
	data, _, chunks := logsOf("r4")
	if !bytes.Equal(data, big) || chunks != 3 {
		t.Errorf("r4: %d bytes in %d chunks", len(data), chunks)
	}
}

func TestConcurrentOrders(t *testing.T) {
	sched, n := setup(t)
	f := n.fake(t)
	var mu sync.Mutex
	inStart, maxInStart := 0, 0
	f.SetStartHook(func(ctx context.Context, inst rt.Instance) error {
		if strings.HasPrefix(inst.ID, "x") {
			<-ctx.Done() // a pull that lasts until the DESTROY cancels it
			return ctx.Err()
		}
		mu.Lock()
		inStart++
		maxInStart = max(maxInStart, inStart)
		mu.Unlock()
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		inStart--
		mu.Unlock()
		return nil
	})
	const N = 20
	for i := 0; i < N; i++ {
		sched.create(fmt.Sprintf("c%d", i), podDef("web", "Always"))
	}
	// Create then destroy right away: serialised per instance, and the
	// DESTROY aborts the start whether or not it began.
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("x%d", i)
		sched.create(id, podDef("web", "Always"))
		sched.destroy(id)
	}
	for i := 0; i < N; i++ {
		sched.waitStatus(t, fmt.Sprintf("c%d", i), is(commonpb.ResourceStatus_RUNNING))
	}
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("x%d", i)
		sched.waitStatus(t, id, is(commonpb.ResourceStatus_TERMINATED))
		if got := statusNames(sched.statusesOf(id)); !slices.Equal(got, []string{"CREATING", "DESTROYING", "TERMINATED(Destroyed)"}) {
			t.Errorf("%s: statuses %v", id, got)
		}
	}
	mu.Lock()
	if maxInStart < 2 {
		t.Errorf("starts never ran concurrently (max %d)", maxInStart)
	}
	mu.Unlock()
	if r := f.Running(); len(r) != N {
		t.Errorf("running %d, want %d", len(r), N)
	}
	waitLedger(t, n.cfg.StateDir, func(l ledgerFile) bool { return len(l.Instances) == N })
}

func TestDestroyCancelsStart(t *testing.T) {
	sched, n := setup(t)
	n.fake(t).SetStartHook(func(ctx context.Context, inst rt.Instance) error {
		<-ctx.Done() // a pull that never ends
		return ctx.Err()
	})
	sched.create("k1", podDef("web", "Always"))
	sched.waitStatus(t, "k1", is(commonpb.ResourceStatus_CREATING))
	sched.destroy("k1")
	sched.waitStatus(t, "k1", is(commonpb.ResourceStatus_TERMINATED))
	if got := statusNames(sched.statusesOf("k1")); !slices.Equal(got, []string{"CREATING", "DESTROYING", "TERMINATED(Destroyed)"}) {
		t.Errorf("statuses = %v", got)
	}
	waitLedger(t, n.cfg.StateDir, func(l ledgerFile) bool { return len(l.Instances) == 0 })
}

func TestDestroyRetriesFailedStop(t *testing.T) {
	sched, n := setup(t)
	sched.create("k2", podDef("web", "Always"))
	sched.waitStatus(t, "k2", is(commonpb.ResourceStatus_RUNNING))
	n.fake(t).FailNextStop(errors.New("device busy"))
	sched.destroy("k2")
	m := sched.waitStatus(t, "k2", func(m *commonpb.InstanceMetric) bool { return strings.Contains(m.GetMessage(), "device busy") })
	if m.GetStatus() != commonpb.ResourceStatus_DESTROYING {
		t.Errorf("status = %v", m)
	}
	sched.waitStatus(t, "k2", is(commonpb.ResourceStatus_TERMINATED))
	if got := n.fake(t).Stops(); got != 2 || len(n.fake(t).Running()) != 0 {
		t.Errorf("stops = %d, running %v", got, n.fake(t).Running())
	}
}

func TestRestartBackoffGrowsAndResets(t *testing.T) {
	sched := startScheduler(t, "127.0.0.1:0")
	cfg, pods := testConfig(t, sched, t.TempDir())
	cfg.knobs.restartBase = 10 * time.Millisecond
	cfg.knobs.restartMax = time.Second
	cfg.knobs.restartReset = time.Second
	n := startNode(t, cfg, pods)
	waitReady(t, sched, 1)
	sched.create("b1", podDef("web", "Always"))
	sched.waitStatus(t, "b1", is(commonpb.ResourceStatus_RUNNING))

	exitAndDelay := func(restarts int32) string {
		t.Helper()
		if err := n.fake(t).Exit("b1", 1); err != nil {
			t.Fatal(err)
		}
		m := sched.waitStatus(t, "b1", func(m *commonpb.InstanceMetric) bool {
			return m.GetReason() == api.ReasonBackOff && m.GetRestarts() == restarts
		})
		sched.waitStatus(t, "b1", func(m *commonpb.InstanceMetric) bool {
			return m.GetStatus() == commonpb.ResourceStatus_RUNNING && m.GetRestarts() == restarts
		})
		return m.GetMessage()
	}
	for i, want := range []string{"10ms", "20ms", "40ms"} {
		if msg := exitAndDelay(int32(i + 1)); msg != "exited with code 1, restarting in "+want {
			t.Errorf("restart %d: message %q, want delay %s", i+1, msg, want)
		}
	}
	time.Sleep(1200 * time.Millisecond) // ran long enough: backoff resets
	if msg := exitAndDelay(4); !strings.HasSuffix(msg, "in 10ms") {
		t.Errorf("after a long run: %q", msg)
	}
}

func TestRecoverRemovesLeftoversWithEmptyLedger(t *testing.T) {
	sched := startScheduler(t, "127.0.0.1:0")
	dir := t.TempDir()
	cfg, pods := testConfig(t, sched, dir)
	f, err := runtimetest.New(workload.KindPod, pods.Dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Plant("leftover", "leftover"); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, cfg, pods)
	reg := waitReady(t, sched, 1)
	if len(reg.GetInstances()) != 0 {
		t.Errorf("instances = %v", reg.GetInstances())
	}
	if r := n.fake(t).Removed(); !slices.Equal(r, []string{"leftover"}) {
		t.Errorf("removed = %v", r)
	}
}

func TestInvalidOrdersRejected(t *testing.T) {
	sched, n := setup(t)
	sched.create("../../etc", podDef("web", "Always"))
	m := sched.waitStatus(t, "../../etc", is(commonpb.ResourceStatus_FAILED))
	if m.GetReason() != api.ReasonInvalidInstanceID {
		t.Errorf("status = %v", m)
	}
	sched.destroy("a/b")
	sched.waitStatus(t, "a/b", is(commonpb.ResourceStatus_TERMINATED))
	sched.orders <- &workerpb.InstanceScheduling{InstanceId: "n1", Definition: podDef("web", "Always"), InstanceName: "Not A Label"}
	m = sched.waitStatus(t, "n1", is(commonpb.ResourceStatus_FAILED))
	if m.GetReason() != api.ReasonInvalidDefinition || !strings.Contains(m.GetMessage(), "instance_name") {
		t.Errorf("status = %v", m)
	}
	if n.fake(t).Starts() != 0 || n.fake(t).Stops() != 0 {
		t.Errorf("invalid orders reached the runtime")
	}
}

func TestSchedulerWithoutRegistrationHeaders(t *testing.T) {
	sched := startScheduler(t, "127.0.0.1:0")
	sched.mu.Lock()
	sched.noHeader = true
	sched.mu.Unlock()
	cfg, pods := testConfig(t, sched, t.TempDir())
	startNode(t, cfg, pods)
	waitReady(t, sched, 1)
	sched.create("h1", podDef("web", "Always"))
	sched.waitStatus(t, "h1", is(commonpb.ResourceStatus_RUNNING))
	if n := len(sched.registrations()); n != 1 {
		t.Errorf("%d registrations: the riklet did not wait patiently", n)
	}
}

// A riklet whose state does not outlive it (rik dev in a temporary
// directory) stops what it runs on exit: nothing would adopt it later.
func TestStopOnExit(t *testing.T) {
	sched := startScheduler(t, "127.0.0.1:0")
	dir := t.TempDir()
	cfg, pods := testConfig(t, sched, dir)
	cfg.StopOnExit = true
	n := startNode(t, cfg, pods)
	waitReady(t, sched, 1)
	for _, id := range []string{"e1", "e2"} {
		sched.create(id, podDef("web", "Always"))
		sched.waitStatus(t, id, is(commonpb.ResourceStatus_RUNNING))
	}
	f := n.fake(t)
	n.stop(t)
	if r := f.Running(); len(r) != 0 {
		t.Errorf("still running after exit: %v", r)
	}
	if l := readLedger(t, dir); len(l.Instances) != 0 {
		t.Errorf("ledger after exit = %+v, want empty", l.Instances)
	}

	// Without it, what runs is left for the next riklet to adopt.
	cfg.StopOnExit = false
	n = startNode(t, cfg, pods)
	waitReady(t, sched, 2)
	sched.create("k1", podDef("web", "Always"))
	sched.waitStatus(t, "k1", is(commonpb.ResourceStatus_RUNNING))
	f = n.fake(t)
	n.stop(t)
	if r := f.Running(); !slices.Equal(r, []string{"k1"}) {
		t.Errorf("running after exit = %v, want k1 kept", r)
	}

	// One that cannot be stopped is kept in the ledger, and Run says so.
	cfg.StopOnExit = true
	n = startNode(t, cfg, pods)
	waitReady(t, sched, 3)
	n.fake(t).FailNextStop(errors.New("device busy"))
	n.stopped = true
	n.cancel()
	if err := <-n.done; err == nil || !strings.Contains(err.Error(), "device busy") {
		t.Errorf("Run = %v, want the stop error", err)
	}
	if l := readLedger(t, dir); len(l.Instances) != 1 || l.Instances[0].InstanceID != "k1" {
		t.Errorf("ledger after a failed stop = %+v, want k1 kept", l.Instances)
	}
}

// exitingOnRecover is a fake runtime whose adopted instances exit while
// Recover is still running, as a crash-looping container may right after
// the riklet adopted it; Recover returns only after a pause, long enough
// for the agent to have handled the exit were it not holding it.
type exitingOnRecover struct {
	*runtimetest.Fake
}

func (r exitingOnRecover) Recover(ctx context.Context, owned []rt.Instance) ([]rt.Status, error) {
	sts, err := r.Fake.Recover(ctx, owned)
	for _, st := range sts {
		if st.Phase == rt.PhaseRunning {
			if err := r.Fake.Exit(st.InstanceID, 1); err != nil {
				return nil, err
			}
		}
	}
	time.Sleep(200 * time.Millisecond)
	return sts, err
}

// An exit reported while the riklet recovers is applied after the instance
// is adopted, not lost under the RUNNING status of its adoption.
func TestExitDuringRecover(t *testing.T) {
	sched := startScheduler(t, "127.0.0.1:0")
	dir := t.TempDir()
	cfg, pods := testConfig(t, sched, dir)
	n := startNode(t, cfg, pods)
	waitReady(t, sched, 1)
	sched.create("r1", podDef("web", "Always"))
	sched.waitStatus(t, "r1", is(commonpb.ResourceStatus_RUNNING))
	n.stop(t)

	cfg2, pods2 := testConfig(t, sched, dir)
	// The restart comes after Recover returned.
	cfg2.knobs.restartBase, cfg2.knobs.restartMax = 400*time.Millisecond, 400*time.Millisecond
	var fake *runtimetest.Fake
	cfg2.Runtimes = []RuntimeFactory{func(ctx context.Context, report rt.Reporter) (rt.Runtime, error) {
		r, err := pods2.New(ctx, report)
		if err != nil {
			return nil, err
		}
		fake = r.(*runtimetest.Fake)
		return exitingOnRecover{fake}, nil
	}}
	startNode(t, cfg2, pods2)
	waitReady(t, sched, 2)
	// Restarted after its exit: started again, RUNNING with one restart.
	sched.waitStatus(t, "r1", func(m *commonpb.InstanceMetric) bool {
		return m.GetStatus() == commonpb.ResourceStatus_RUNNING && m.GetRestarts() == 1
	})
	eventually(t, func() bool { return fake.Starts() == 1 && slices.Equal(fake.Running(), []string{"r1"}) },
		func() string { return fmt.Sprintf("starts %d, running %v", fake.Starts(), fake.Running()) })
}

// blockingRecover is a fake runtime whose Recover lasts until its context
// ends, then fails, as listing containers does when the riklet is stopped
// while it starts.
type blockingRecover struct {
	*runtimetest.Fake
	entered chan struct{}
}

func (r blockingRecover) Recover(ctx context.Context, owned []rt.Instance) ([]rt.Status, error) {
	close(r.entered)
	<-ctx.Done()
	return nil, fmt.Errorf("listing containers: %w", ctx.Err())
}

// A riklet stopped while it recovers does not take its owned instances for
// lost: the ledger keeps them as they were, for the next start to adopt.
func TestStopDuringRecoverKeepsLedger(t *testing.T) {
	sched := startScheduler(t, "127.0.0.1:0")
	dir := t.TempDir()
	cfg, pods := testConfig(t, sched, dir)
	n := startNode(t, cfg, pods)
	waitReady(t, sched, 1)
	sched.create("s1", podDef("job", "Never"))
	sched.waitStatus(t, "s1", is(commonpb.ResourceStatus_RUNNING))
	n.stop(t)

	cfg2, pods2 := testConfig(t, sched, dir)
	entered := make(chan struct{})
	cfg2.Runtimes = []RuntimeFactory{func(ctx context.Context, report rt.Reporter) (rt.Runtime, error) {
		r, err := pods2.New(ctx, report)
		if err != nil {
			return nil, err
		}
		return blockingRecover{r.(*runtimetest.Fake), entered}, nil
	}}
	n2 := startNode(t, cfg2, pods2)
	select {
	case <-entered:
	case <-time.After(waitFor):
		t.Fatal("Recover not called")
	}
	n2.stop(t)
	l := readLedger(t, dir)
	var got []string
	for _, e := range l.Instances {
		got = append(got, fmt.Sprintf("%s %s %s", e.InstanceID, e.Last.Status, e.Last.Reason))
	}
	if len(l.Instances) != 1 || l.Instances[0].Last.Status != workload.StatusRunning {
		t.Errorf("ledger after a stop during recovery = %q, want s1 RUNNING", got)
	}
}
