package schedlink

import (
	"encoding/json"
	"fmt"
	goruntime "runtime"
	"slices"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/workerpb"
	"github.com/rik-org/rik/internal/riklet/ledger"
	"github.com/rik-org/rik/internal/riklet/schedlink/schedlinktest"
	"github.com/rik-org/rik/internal/workload"
)

func TestRegistrationAndHeartbeat(t *testing.T) {
	sched := schedlinktest.Start(t, "127.0.0.1:0")
	led := openLedger(t)
	if err := led.Add(ledger.Entry{InstanceID: "i0", WorkloadID: "w", Last: ledger.LastStatus{Status: workload.StatusRunning, IP: "10.0.0.2"}}); err != nil {
		t.Fatal(err)
	}
	startLink(t, testConfig(t, sched.Addr), nil, newFakeSupervisor(t), led)
	reg := sched.WaitReady(t, 1)

	if reg.GetHostname() != "node-1" || reg.GetVersion() != "v-test" {
		t.Errorf("hostname %q, version %q", reg.GetHostname(), reg.GetVersion())
	}
	if got := reg.GetKinds(); !slices.Equal(got, []string{"pod"}) {
		t.Errorf("kinds = %v, want the supervisor's", got)
	}
	c := reg.GetCapacity()
	if c.GetCpuMillis() != int64(goruntime.NumCPU())*1000 || c.GetMemoryMib() <= 0 || c.GetDiskMib() <= 0 {
		t.Errorf("capacity = %v", c)
	}
	if reg.GetLabels()["zone"] != "a" || reg.GetAddress() == "" {
		t.Errorf("labels %v, address %q", reg.GetLabels(), reg.GetAddress())
	}
	if in := reg.GetInstances(); len(in) != 1 || in[0].GetInstanceId() != "i0" || in[0].GetIp() != "10.0.0.2" {
		t.Errorf("instances = %v, want the ledger's", in)
	}

	hb := sched.Heartbeats()[0]
	if hb.GetStatus() != commonpb.ResourceStatus_RUNNING || !slices.Equal(hb.GetKinds(), []string{"pod"}) ||
		hb.GetCapacity().GetMemoryMib() <= 0 || hb.GetUsage().GetMemoryMib() <= 0 {
		t.Errorf("heartbeat = %v", hb)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(hb.GetMetrics()), &m); err != nil || m["cpu"] == nil || m["disks"] == nil {
		t.Errorf("metrics JSON %q: %v", hb.GetMetrics(), err)
	}
	// Heartbeats keep coming.
	eventually(t, func() bool { return len(sched.Heartbeats()) >= 3 }, func() string { return "heartbeats" })
}

// Orders go to the supervisor as they come; statuses the ledger queues go
// to the scheduler in order.
func TestOrdersAndStatuses(t *testing.T) {
	n := setup(t)
	n.sched.Order(&workerpb.InstanceScheduling{InstanceId: "i1", WorkloadId: "w1", InstanceName: "web-1",
		Definition: `{"kind":"Pod"}`, Action: commonpb.WorkloadRequestKind_CREATE})
	n.sched.Order(&workerpb.InstanceScheduling{InstanceId: "i1", WorkloadId: "w1", Action: commonpb.WorkloadRequestKind_DESTROY})
	n.sched.Order(&workerpb.InstanceScheduling{InstanceId: "i2", Action: commonpb.WorkloadRequestKind(7)})
	n.sched.Order(&workerpb.InstanceScheduling{InstanceId: "i3", WorkloadId: "w3", Action: commonpb.WorkloadRequestKind_DESTROY})
	want := []string{"create i1 w1 web-1", "destroy i1 w1", "destroy i3 w3"} // the unknown action is ignored
	eventually(t, func() bool { return slices.Equal(n.sup.ordersTaken(), want) },
		func() string { return fmt.Sprintf("orders %q, want %q", n.sup.ordersTaken(), want) })
	if d := n.sup.defs["i1"]; d != `{"kind":"Pod"}` {
		t.Errorf("definition passed on = %q", d)
	}

	if err := n.led.Add(ledger.Entry{InstanceID: "i1", WorkloadID: "w1", Last: ledger.LastStatus{Status: workload.StatusCreating}}); err != nil {
		t.Fatal(err)
	}
	n.led.Update("i1", func(e *ledger.Entry) { e.Last = ledger.LastStatus{Status: workload.StatusRunning, IP: "10.0.0.3"} })
	n.led.Remove("i1", ledger.LastStatus{Status: workload.StatusTerminated, Reason: api.ReasonDestroyed})
	n.sched.WaitStatus(t, "i1", schedlinktest.Is(commonpb.ResourceStatus_TERMINATED))
	var got []string
	for _, m := range n.sched.StatusesOf("i1") {
		got = append(got, m.GetStatus().String()+" "+m.GetIp()+" "+m.GetReason())
	}
	if want := []string{"CREATING  ", "RUNNING 10.0.0.3 ", "TERMINATED  Destroyed"}; !slices.Equal(got, want) {
		t.Errorf("statuses %q, want %q", got, want)
	}
	if _, ok := n.led.Peek(); ok {
		t.Error("statuses sent are still queued")
	}
}

// A scheduler that restarts gets the node registered again, with what it
// runs, and the latest status of each instance.
func TestSchedulerRestart(t *testing.T) {
	n := setup(t)
	if err := n.led.Add(ledger.Entry{InstanceID: "r1", WorkloadID: "w", Last: ledger.LastStatus{Status: workload.StatusRunning, IP: "10.0.0.4"}}); err != nil {
		t.Fatal(err)
	}
	n.sched.WaitStatus(t, "r1", schedlinktest.Is(commonpb.ResourceStatus_RUNNING))

	addr := n.sched.Addr
	n.sched.Stop()
	sched2 := schedlinktest.Start(t, addr)
	reg := sched2.WaitReady(t, 1)
	if in := reg.GetInstances(); len(in) != 1 || in[0].GetInstanceId() != "r1" || in[0].GetStatus() != commonpb.ResourceStatus_RUNNING {
		t.Errorf("re-registration instances = %v", in)
	}
	if m := sched2.WaitStatus(t, "r1", schedlinktest.Is(commonpb.ResourceStatus_RUNNING)); m.GetIp() != "10.0.0.4" {
		t.Errorf("re-sent status = %v", m)
	}
	// Orders work on the new scheduler.
	sched2.Order(&workerpb.InstanceScheduling{InstanceId: "r1", WorkloadId: "w", Action: commonpb.WorkloadRequestKind_DESTROY})
	eventually(t, func() bool { return slices.Contains(n.sup.ordersTaken(), "destroy r1 w") }, func() string { return "destroy order" })
}

// A status changed while no scheduler listens is sent once one does.
func TestStatusesQueuedWhileDisconnected(t *testing.T) {
	n := setup(t)
	if err := n.led.Add(ledger.Entry{InstanceID: "q1", WorkloadID: "w", Last: ledger.LastStatus{Status: workload.StatusRunning}}); err != nil {
		t.Fatal(err)
	}
	n.sched.WaitStatus(t, "q1", schedlinktest.Is(commonpb.ResourceStatus_RUNNING))
	addr := n.sched.Addr
	n.sched.Stop()
	n.led.Update("q1", func(e *ledger.Entry) {
		e.Last = ledger.LastStatus{Status: workload.StatusTerminated, Reason: api.ReasonCompleted}
	})
	sched2 := schedlinktest.Start(t, addr)
	if m := sched2.WaitStatus(t, "q1", schedlinktest.Is(commonpb.ResourceStatus_TERMINATED)); m.GetReason() != api.ReasonCompleted {
		t.Errorf("status = %v", m)
	}
}

func TestSchedulerWithoutRegistrationHeaders(t *testing.T) {
	sched := schedlinktest.Start(t, "127.0.0.1:0")
	sched.SendNoHeader()
	led := openLedger(t)
	startLink(t, testConfig(t, sched.Addr), nil, newFakeSupervisor(t), led)
	sched.WaitReady(t, 1)
	led.Send("h1", "w", ledger.LastStatus{Status: workload.StatusFailed, Reason: api.ReasonNoRuntime})
	sched.WaitStatus(t, "h1", schedlinktest.Is(commonpb.ResourceStatus_FAILED))
	if n := len(sched.Registrations()); n != 1 {
		t.Errorf("%d registrations: the riklet did not wait patiently", n)
	}
}

// Issue 8 (4): a riklet configured with a heartbeat as long as the
// scheduler's node timeout is declared lost by any jitter. It uses the
// interval the scheduler's registration header allows instead.
func TestHeartbeatFromScheduler(t *testing.T) {
	sched := schedlinktest.Start(t, "127.0.0.1:0")
	sched.SetHeartbeatHeader("20ms")
	cfg := testConfig(t, sched.Addr)
	cfg.HeartbeatInterval = time.Hour
	startLink(t, cfg, nil, newFakeSupervisor(t), openLedger(t))
	sched.WaitReady(t, 1)
	// One heartbeat is sent when the status stream opens; more come only
	// at the allowed interval (an hour otherwise).
	eventually(t, func() bool { return len(sched.Heartbeats()) >= 3 }, func() string {
		return fmt.Sprintf("%d heartbeats with a 20ms interval allowed", len(sched.Heartbeats()))
	})
}

func TestSetHeartbeat(t *testing.T) {
	l := New(Config{HeartbeatInterval: 5 * time.Second}, nil, nil, nil)
	for _, tc := range []struct {
		header []string
		want   time.Duration
	}{
		{nil, 5 * time.Second},
		{[]string{"2s"}, 2 * time.Second},
		{[]string{"10s"}, 5 * time.Second}, // longer than configured: the configured one
		{[]string{"nonsense"}, 5 * time.Second},
		{[]string{"-1s"}, 5 * time.Second},
	} {
		l.setHeartbeat(tc.header)
		if got := l.heartbeatInterval(); got != tc.want {
			t.Errorf("header %q: interval %v, want %v", tc.header, got, tc.want)
		}
	}
}

func TestNormalizeAddr(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "127.0.0.1:4995"},
		{"127.0.0.1:4995", "127.0.0.1:4995"},
		{"http://10.0.0.1:5000", "10.0.0.1:5000"},
		{"HTTP://sched:4995/", "sched:4995"},
		{"sched", "sched:4995"},
		{"[::1]:4995", "[::1]:4995"},
		{"http://[::1]", "[::1]:4995"},
	} {
		got, err := NormalizeAddr(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("NormalizeAddr(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"http://", "http://h:1/path", "a b:1", "sched:http", "sched:0", "sched:70000"} {
		if got, err := NormalizeAddr(bad); err == nil {
			t.Errorf("NormalizeAddr(%q) = %q, want error", bad, got)
		}
	}
}
