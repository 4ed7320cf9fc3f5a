package scheduler

import (
	"fmt"
	"testing"
	"time"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/internal/scheduler/placement"
)

// FuzzStateOps drives the state with arbitrary sequences of orders,
// registrations, statuses and clock ticks: nothing panics and the
// bookkeeping stays consistent.
func FuzzStateOps(f *testing.F) {
	f.Add([]byte{0, 0, 1, 0, 3, 0, 0, 2, 6, 0, 0, 3, 0, 0, 1})
	f.Add([]byte{1, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 0, 8, 1, 2, 9, 0, 0})
	f.Add([]byte{7, 0, 1, 2, 0, 1, 4, 0, 0, 5, 5, 5, 0, 0, 0, 3, 1, 2})
	f.Fuzz(func(t *testing.T, ops []byte) {
		clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
		st := newState(testLogger(t), placement.Spread, 10*time.Second, 5*time.Second, clk.now)
		sub, _, _ := st.subscribe("", 0)
		for len(ops) >= 3 {
			op, a, b := ops[0]%10, ops[1], ops[2]
			ops = ops[3:]
			nodeName := fmt.Sprintf("n%d", a%3)
			key := fmt.Sprintf("k%d", b%2) // two certificates may claim a name
			id := fmt.Sprintf("i%d", b%4)
			req := placement.Request{Kind: "pod", CPUMillis: int64(a%4) * 300, MemoryMiB: int64(b%3) * 200}
			if b%5 == 0 {
				req.HostPorts = []placement.Port{{Number: 8080, Protocol: "TCP"}}
			}
			switch op {
			case 0:
				var listed []*commonpb.InstanceMetric
				if b%2 == 0 {
					listed = append(listed, &commonpb.InstanceMetric{InstanceId: fmt.Sprintf("i%d", a%4), Status: commonpb.ResourceStatus(b % 8)})
				}
				_, _ = st.register(&commonpb.WorkerRegistration{Hostname: nodeName, Kinds: []string{"pod"},
					Capacity: &commonpb.Resources{CpuMillis: 1000, MemoryMib: 1000}, Instances: listed}, key)
			case 1:
				hint := ""
				if a%2 == 0 {
					hint = nodeName
				}
				st.create(&controllerpb.WorkloadScheduling{InstanceId: id, WorkloadId: "w", Node: hint}, req)
			case 2:
				st.destroy(&controllerpb.WorkloadScheduling{InstanceId: id, Action: commonpb.WorkloadRequestKind_DESTROY})
			case 3, 4:
				_ = st.instanceStatus(nodeName, key, &commonpb.InstanceMetric{InstanceId: id, Status: commonpb.ResourceStatus(a % 8)})
			case 5:
				_ = st.heartbeat(nodeName, key, &commonpb.WorkerMetric{Capacity: &commonpb.Resources{CpuMillis: int64(b) * 10, MemoryMib: 1000}})
			case 6:
				clk.t = clk.t.Add(time.Duration(a) * 100 * time.Millisecond)
				st.check()
			case 7:
				if n := st.nodes[nodeName]; n != nil {
					st.disconnect(nodeName, n.conn)
				}
			case 8:
				st.listNodes()
				st.gauges()
			case 9: // drain the subscriber
				for sub.queued() > 0 {
					sub.next()
				}
			}
			checkInvariants(t, st)
		}
	})
}

func checkInvariants(t *testing.T, st *state) {
	t.Helper()
	st.mu.Lock()
	defer st.mu.Unlock()
	for id, inst := range st.insts {
		_, pend := st.pending[id]
		_, park := st.parked[id]
		if pend != (inst.phase == phasePending) || park != (inst.phase == phaseParked) {
			t.Fatalf("instance %s: phase %d, in pending %v, in parked %v", id, inst.phase, pend, park)
		}
		if inst.phase == phaseAssigned {
			n := st.nodes[inst.node]
			if n == nil || n.insts[id] != inst {
				t.Fatalf("instance %s assigned to %q, which does not hold it", id, inst.node)
			}
		}
	}
	for id := range st.pending {
		if st.insts[id] == nil {
			t.Fatalf("pending %s unknown", id)
		}
	}
	for id := range st.parked {
		if st.insts[id] == nil {
			t.Fatalf("parked %s unknown", id)
		}
	}
	for _, n := range st.nodes {
		var cpu, mem int64
		ports := map[placement.Port]int{}
		for id, inst := range n.insts {
			if st.insts[id] != inst || inst.node != n.name || inst.phase != phaseAssigned {
				t.Fatalf("node %s holds stale instance %s", n.name, id)
			}
			if inst.allocated {
				cpu += inst.req.CPUMillis
				mem += inst.req.MemoryMiB
				for _, p := range inst.req.HostPorts {
					ports[p]++
				}
			}
		}
		if cpu != n.allocCPU || mem != n.allocMem || len(ports) != len(n.ports) {
			t.Fatalf("node %s: allocated %d/%d ports %v, instances add up to %d/%d ports %v",
				n.name, n.allocCPU, n.allocMem, n.ports, cpu, mem, ports)
		}
		for p, c := range ports {
			if n.ports[p] != c {
				t.Fatalf("node %s: port %v counted %d, want %d", n.name, p, n.ports[p], c)
			}
		}
	}
}
