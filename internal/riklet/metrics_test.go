package riklet

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/internal/riklet/schedlink/schedlinktest"
	"github.com/rik-org/rik/internal/testutil/promcheck"
)

// The node's metrics show a pod's start once it runs, and what the node
// holds by state.
func TestMetricsAfterAPodRuns(t *testing.T) {
	sched := schedlinktest.Start(t, "127.0.0.1:0")
	cfg, pods := testConfig(t, sched.Addr, t.TempDir())
	ml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.MetricsListener = ml
	startNode(t, cfg, pods)
	sched.WaitReady(t, 1)
	scrape := func() string {
		resp, err := http.Get("http://" + ml.Addr().String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("scrape: %d, %v", resp.StatusCode, err)
		}
		return string(b)
	}
	if m := scrape(); !strings.Contains(m, `rik_riklet_start_duration_seconds_count{kind="pod"} 0`+"\n") {
		t.Errorf("before any pod, metrics lack a zero start count:\n%s", m)
	}
	sched.Create("i1", podDef("web"))
	sched.WaitStatus(t, "i1", is(commonpb.ResourceStatus_RUNNING))
	m := scrape()
	promcheck.Check(t, []byte(m))
	for _, line := range []string{
		`rik_riklet_start_duration_seconds_count{kind="pod"} 1`,
		`rik_riklet_instances{kind="pod",state="RUNNING"} 1`,
		`rik_riklet_start_failures_total{kind="pod"} 0`,
	} {
		if !strings.Contains(m, line+"\n") {
			t.Errorf("metrics lack %q", line)
		}
	}
}
