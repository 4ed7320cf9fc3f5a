package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rik-org/rik/internal/riklet/ledger"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/testutil/promcheck"
	"github.com/rik-org/rik/internal/version"
	"github.com/rik-org/rik/internal/workload"
)

func TestPhases(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name    string
		kind    workload.Kind
		timings map[string]int64
		want    []phase
	}{
		{"pod", workload.KindPod, map[string]int64{"pulled": 1200, "network": 1250, "containers": 1400, "running": 1401},
			[]phase{{phaseImagePull, 1200 * ms}, {phaseSDN, 50 * ms}}},
		{"pod without network mark", workload.KindPod, map[string]int64{"pulled": 30}, []phase{{phaseImagePull, 30 * ms}}},
		{"function", workload.KindFunction, map[string]int64{"fetched": 900, "network_ready": 940, "vmm_started": 960, "guest_running": 2960},
			[]phase{{phaseRootfs, 900 * ms}, {phaseSDN, 40 * ms}, {phaseVMBoot, 2000 * ms}}},
		{"function that never booted", workload.KindFunction, map[string]int64{"fetched": 5, "vmm_started": 9},
			[]phase{{phaseRootfs, 5 * ms}}},
		{"clock going back", workload.KindFunction, map[string]int64{"fetched": 50, "network_ready": 40}, []phase{{phaseRootfs, 50 * ms}}},
		{"nothing", workload.KindPod, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, phases(tc.kind, tc.timings), cmp.AllowUnexported(phase{})); d != "" {
				t.Errorf("phases (-want +got):\n%s", d)
			}
		})
	}
}

// fakeLedger lists fixed entries.
type fakeLedger []ledger.Entry

func (l fakeLedger) List() []ledger.Entry { return l }

func TestMetrics(t *testing.T) {
	entries := fakeLedger{
		{InstanceID: "a", Kind: workload.KindPod, Last: ledger.LastStatus{Status: workload.StatusRunning}},
		{InstanceID: "b", Kind: workload.KindPod, Last: ledger.LastStatus{Status: workload.StatusRunning}},
		{InstanceID: "c", Kind: workload.KindFunction, Last: ledger.LastStatus{Status: workload.StatusCreating}},
	}
	m := New(entries)
	m.Started(workload.KindPod, 1500*time.Millisecond, runtime.Status{Phase: runtime.PhaseRunning,
		Timings: map[string]int64{"pulled": 1000, "network": 1100, "running": 1500}}, nil)
	m.Started(workload.KindFunction, 3*time.Second, runtime.Status{Phase: runtime.PhaseRunning,
		Timings: map[string]int64{"fetched": 500, "network_ready": 600, "vmm_started": 700, "guest_running": 2900}}, nil)
	m.Started(workload.KindPod, time.Second, runtime.Status{Phase: runtime.PhaseFailed}, errors.New("pull failed"))
	m.Restarting(workload.KindPod)

	want := `
# HELP rik_riklet_instances Instances the node holds, by kind and state (last status reported).
# TYPE rik_riklet_instances gauge
rik_riklet_instances{kind="function",state="CREATING"} 1
rik_riklet_instances{kind="function",state="FAILED"} 0
rik_riklet_instances{kind="function",state="RUNNING"} 0
rik_riklet_instances{kind="pod",state="CREATING"} 0
rik_riklet_instances{kind="pod",state="FAILED"} 0
rik_riklet_instances{kind="pod",state="RUNNING"} 2
# HELP rik_riklet_restarts_total Instances restarted after they exited or failed, by kind.
# TYPE rik_riklet_restarts_total counter
rik_riklet_restarts_total{kind="function"} 0
rik_riklet_restarts_total{kind="pod"} 1
# HELP rik_riklet_start_failures_total Starts that failed, by kind.
# TYPE rik_riklet_start_failures_total counter
rik_riklet_start_failures_total{kind="function"} 0
rik_riklet_start_failures_total{kind="pod"} 1
`
	if err := testutil.GatherAndCompare(m.reg, strings.NewReader(want),
		"rik_riklet_instances", "rik_riklet_restarts_total", "rik_riklet_start_failures_total"); err != nil {
		t.Error(err)
	}
	body := scrapeHandler(t, m)
	promcheck.Check(t, []byte(body))
	for _, line := range []string{
		`rik_riklet_start_duration_seconds_count{kind="pod"} 1`,
		`rik_riklet_start_duration_seconds_sum{kind="pod"} 1.5`,
		`rik_riklet_start_duration_seconds_sum{kind="function"} 3`,
		`rik_riklet_image_pull_duration_seconds_sum 1`,
		`rik_riklet_rootfs_fetch_duration_seconds_sum 0.5`,
		`rik_riklet_vm_boot_duration_seconds_sum 2.2`,
		`rik_riklet_sdn_programming_duration_seconds_sum{kind="pod"} 0.1`,
		`rik_riklet_sdn_programming_duration_seconds_sum{kind="function"} 0.1`,
		`rik_build_info{goversion="` + version.GoVersion() + `",version="` + version.Version + `"} 1`,
	} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("metrics lack %q", line)
		}
	}
}

// scrapeHandler serves the metrics on loopback and scrapes them, with
// /healthz.
func scrapeHandler(t *testing.T, m *Metrics) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx, l) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	get := func(path string) string {
		resp, err := http.Get("http://" + l.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	if h := get("/healthz"); h != "ok\n" {
		t.Errorf("healthz %q", h)
	}
	return get("/metrics")
}
