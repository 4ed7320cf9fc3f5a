package link

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/internal/controller/service"
	"github.com/rik-org/rik/internal/workload"
)

func TestStatusOf(t *testing.T) {
	zero, one := 0, 1
	for _, tc := range []struct {
		name string
		m    *commonpb.InstanceMetric
		want service.Status
	}{
		{"everything", &commonpb.InstanceMetric{InstanceId: "i", WorkloadId: "w", Status: commonpb.ResourceStatus_FAILED,
			Node: "n1", Ip: "10.0.0.2", Reason: api.ReasonError, Message: "m", HasExitCode: true, ExitCode: 1, Restarts: 2,
			Ports:     []*commonpb.PortMapping{{Port: 8080, TargetPort: 80, Protocol: "TCP"}},
			TimingsMs: map[string]int64{"pull": 5}},
			service.Status{InstanceID: "i", WorkloadID: "w", Status: workload.StatusFailed, Node: "n1", IP: "10.0.0.2",
				Reason: api.ReasonError, Message: "m", ExitCode: &one, Restarts: 2,
				Ports: []workload.PortMapping{{Port: 8080, TargetPort: 80, Protocol: "TCP"}}, Timings: map[string]int64{"pull": 5}}},
		{"exit code 0 is a code", &commonpb.InstanceMetric{InstanceId: "i", Status: commonpb.ResourceStatus_TERMINATED, HasExitCode: true},
			service.Status{InstanceID: "i", Status: workload.StatusTerminated, ExitCode: &zero}},
		{"no exit code", &commonpb.InstanceMetric{InstanceId: "i", Status: commonpb.ResourceStatus_RUNNING},
			service.Status{InstanceID: "i", Status: workload.StatusRunning}},
		{"ready", &commonpb.InstanceMetric{InstanceId: "i", Status: commonpb.ResourceStatus_RUNNING, Ready: true},
			service.Status{InstanceID: "i", Status: workload.StatusRunning, Ready: true}},
		{"unknown status", &commonpb.InstanceMetric{InstanceId: "i", Status: commonpb.ResourceStatus(42)},
			service.Status{InstanceID: "i", Status: workload.StatusUnknown}},
	} {
		if diff := cmp.Diff(tc.want, statusOf(tc.m)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
	for st := range commonpb.ResourceStatus_name {
		if got := statusOf(&commonpb.InstanceMetric{Status: commonpb.ResourceStatus(st)}).Status; string(got) != commonpb.ResourceStatus(st).String() {
			t.Errorf("status %v read as %q", commonpb.ResourceStatus(st), got)
		}
	}
}

func TestOrderOf(t *testing.T) {
	def := workload.Workload{Kind: workload.KindPod, Name: "web"}
	o := orderOf(service.Order{Action: service.Destroy, WorkloadID: "w", Definition: &def, InstanceID: "i",
		InstanceName: "web-1", Node: "n1", FormerNodes: []string{"n0"}})
	data, _ := json.Marshal(def)
	want := &controllerpb.WorkloadScheduling{WorkloadId: "w", Definition: string(data),
		Action: commonpb.WorkloadRequestKind_DESTROY, InstanceId: "i", InstanceName: "web-1", Node: "n1", FormerNodes: []string{"n0"}}
	if o.String() != want.String() {
		t.Errorf("orderOf = %v\n want %v", o, want)
	}
	if o := orderOf(service.Order{Action: service.Create, InstanceID: "i"}); o.GetDefinition() != "" || o.GetAction() != commonpb.WorkloadRequestKind_CREATE {
		t.Errorf("order without definition: %v", o)
	}
}

func TestNodeOf(t *testing.T) {
	got := nodeOf(&controllerpb.Node{Name: "n1", Status: "Ready", Capacity: &commonpb.Resources{CpuMillis: 4000, MemoryMib: 8192, DiskMib: 10},
		Allocated: &commonpb.Resources{CpuMillis: 500, MemoryMib: 64, DiskMib: 7}, Instances: 3, LastHeartbeatUnixMs: 1767323045000})
	want := api.Node{Name: "n1", Status: "Ready", Capacity: api.Resources{CPU: 4000, Memory: 8192, Disk: 10},
		Allocated: api.Allocation{CPU: 500, Memory: 64}, Kinds: []string{}, Labels: map[string]string{}, Instances: 3,
		LastHeartbeat: "2026-01-02T03:04:05Z"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("nodeOf (-want +got):\n%s", diff)
	}
}
