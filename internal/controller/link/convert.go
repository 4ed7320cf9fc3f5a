package link

import (
	"encoding/json"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/internal/controller/service"
	"github.com/rik-org/rik/internal/workload"
)

// Conversions between the gRPC messages and the service's types.

func actionOf(a service.Action) commonpb.WorkloadRequestKind {
	if a == service.Destroy {
		return commonpb.WorkloadRequestKind_DESTROY
	}
	return commonpb.WorkloadRequestKind_CREATE
}

func orderOf(o service.Order) *controllerpb.WorkloadScheduling {
	def := ""
	if o.Definition != nil {
		b, _ := json.Marshal(o.Definition) // a decoded workload always encodes
		def = string(b)
	}
	return &controllerpb.WorkloadScheduling{
		WorkloadId:   o.WorkloadID,
		Definition:   def,
		Action:       actionOf(o.Action),
		InstanceId:   o.InstanceID,
		InstanceName: o.InstanceName,
		Node:         o.Node,
		FormerNodes:  o.FormerNodes,
	}
}

var statuses = map[commonpb.ResourceStatus]workload.Status{
	commonpb.ResourceStatus_PENDING:    workload.StatusPending,
	commonpb.ResourceStatus_RUNNING:    workload.StatusRunning,
	commonpb.ResourceStatus_FAILED:     workload.StatusFailed,
	commonpb.ResourceStatus_TERMINATED: workload.StatusTerminated,
	commonpb.ResourceStatus_CREATING:   workload.StatusCreating,
	commonpb.ResourceStatus_DESTROYING: workload.StatusDestroying,
}

func statusOf(m *commonpb.InstanceMetric) service.Status {
	st, ok := statuses[m.GetStatus()]
	if !ok {
		st = workload.StatusUnknown
	}
	s := service.Status{
		InstanceID: m.GetInstanceId(), WorkloadID: m.GetWorkloadId(), Status: st,
		Node: m.GetNode(), IP: m.GetIp(), Reason: m.GetReason(), Message: m.GetMessage(),
		Restarts: int(m.GetRestarts()), Timings: m.GetTimingsMs(), Ready: m.GetReady(),
	}
	if m.GetHasExitCode() {
		code := int(m.GetExitCode())
		s.ExitCode = &code
	}
	for _, p := range m.GetPorts() {
		s.Ports = append(s.Ports, workload.PortMapping{Port: int(p.GetPort()), TargetPort: int(p.GetTargetPort()), Protocol: p.GetProtocol()})
	}
	return s
}

func resourcesOf(r *commonpb.Resources) api.Resources {
	return api.Resources{CPU: r.GetCpuMillis(), Memory: r.GetMemoryMib(), Disk: r.GetDiskMib()}
}

func nodeOf(n *controllerpb.Node) api.Node {
	v := api.Node{
		Name: n.GetName(), Status: n.GetStatus(),
		Capacity: resourcesOf(n.GetCapacity()), Usage: resourcesOf(n.GetUsage()),
		Allocated: api.Allocation{CPU: n.GetAllocated().GetCpuMillis(), Memory: n.GetAllocated().GetMemoryMib()},
		Kinds:     n.GetKinds(), Labels: n.GetLabels(), Address: n.GetAddress(),
		Instances: n.GetInstances(), Load1: n.GetLoad1(), PodSubnet: n.GetPodSubnet(),
	}
	if v.Kinds == nil {
		v.Kinds = []string{}
	}
	if v.Labels == nil {
		v.Labels = map[string]string{}
	}
	if ms := n.GetLastHeartbeatUnixMs(); ms > 0 {
		v.LastHeartbeat = time.UnixMilli(ms).UTC().Format(time.RFC3339)
	}
	return v
}

func logRequestOf(r service.LogRequest) *commonpb.LogRequest {
	return &commonpb.LogRequest{InstanceId: r.InstanceID, Container: r.Container, Follow: r.Follow, Tail: r.Tail}
}
