package scheduler

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scrape reads /metrics at addr into series -> value.
func scrape(t *testing.T, addr net.Addr) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr.String() + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, b)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestMetricsEndpoint(t *testing.T) {
	ml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := startScheduler(t, Config{MetricsListener: ml, NodeTimeout: 500 * time.Millisecond})
	n1 := h.register("n1", 1000, 1000)
	h.create("fits", pod(500, 500, 0))
	n1.expectOrder("fits", create)
	h.create("too-big", pod(5000, 500, 0))
	eventually(t, "too-big pending", func() bool {
		return scrape(t, ml.Addr())[`rik_scheduler_instances{state="pending"}`] == 1
	})

	want := func(m map[string]float64, series string, v float64) {
		t.Helper()
		if got, ok := m[series]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, v)
		}
	}
	m := scrape(t, ml.Addr())
	want(m, `rik_scheduler_nodes{status="Ready"}`, 1)
	want(m, `rik_scheduler_nodes{status="NotReady"}`, 0)
	want(m, `rik_scheduler_instances{state="placed"}`, 1)
	want(m, `rik_scheduler_instances{state="pending"}`, 1)
	want(m, `rik_scheduler_instances{state="parked"}`, 0)
	want(m, `rik_scheduler_placements_total{result="placed"}`, 1)
	want(m, `rik_scheduler_nodes_lost_total`, 0)
	want(m, `rik_scheduler_placement_latency_seconds_count`, 1)
	if m[`rik_scheduler_placements_total{result="no_fit"}`] < 1 {
		t.Errorf("no_fit placements = %v, want at least 1", m[`rik_scheduler_placements_total{result="no_fit"}`])
	}
	if _, ok := m["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}

	// No more heartbeats: the node is lost.
	eventually(t, "node lost in metrics", func() bool {
		return scrape(t, ml.Addr())[`rik_scheduler_nodes_lost_total`] == 1
	})
	m = scrape(t, ml.Addr())
	want(m, `rik_scheduler_nodes{status="Ready"}`, 0)
	want(m, `rik_scheduler_nodes{status="NotReady"}`, 1)
	want(m, `rik_scheduler_instances{state="placed"}`, 0)
}
