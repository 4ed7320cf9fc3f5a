package controller

import (
	"strings"
	"testing"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/internal/workload"
)

func TestMetrics(t *testing.T) {
	e := newEnv(t)
	wl := e.createWorkload(podDef("web"))
	e.do("POST", "/api/v0/workloads.create", podDef("web")) // 409
	in := e.createInstances(map[string]any{"workload_id": wl.ID, "replicas": 2})
	e.sched.push(&commonpb.InstanceMetric{InstanceId: in[0].ID, Status: commonpb.ResourceStatus_RUNNING})
	e.waitInstance(in[0].ID, "running", func(i workload.Instance) bool { return i.Status == workload.StatusRunning })
	var body string
	eventually(t, "metrics", func() bool {
		body = string(e.must(200, "GET", "/metrics", nil).body)
		return strings.Contains(body, `rik_controller_instances{status="RUNNING"} 1`) &&
			strings.Contains(body, `rik_controller_instances{status="PENDING"} 1`)
	})
	for _, want := range []string{
		`rik_controller_http_requests_total{code="201",route="POST /api/v0/workloads.create"} 1`,
		`rik_controller_http_requests_total{code="409",route="POST /api/v0/workloads.create"} 1`,
		`rik_controller_http_request_duration_seconds_count{route="POST /api/v0/instances.create"} 1`,
		`rik_controller_scheduler_connected 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
