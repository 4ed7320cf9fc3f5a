package riklet

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/internal/workload"
)

const sampleMeminfo = `MemTotal:       16303428 kB
MemFree:          530412 kB
MemAvailable:    9876544 kB
Buffers:          412340 kB
Cached:          8123456 kB
SwapCached:            0 kB
HugePages_Total:       0
`

func TestParseMemInfo(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       memInfo
		err        bool
	}{
		{"available", sampleMeminfo, memInfo{TotalKiB: 16303428, AvailableKiB: 9876544}, false},
		{"no MemAvailable", "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n", memInfo{1000, 400}, false},
		{"available capped", "MemTotal: 100 kB\nMemAvailable: 900 kB\n", memInfo{100, 100}, false},
		{"garbage lines", "junk\nMemTotal: x kB\nMemTotal: 2048 kB\n: 3\n", memInfo{2048, 0}, false},
		{"no total", "MemFree: 1 kB\n", memInfo{}, true},
		{"empty", "", memInfo{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseMemInfo(tc.text)
			if (err != nil) != tc.err || got != tc.want {
				t.Errorf("got %+v, %v; want %+v, err %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestParseProcStat(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       cpuTimes
		err        bool
	}{
		{"modern", "cpu  100 5 50 800 20 3 2 1 40 0\ncpu0 50 2 25 400 10 1 1 0 0 0\nintr 1 2\n",
			cpuTimes{Total: 100 + 5 + 50 + 800 + 20 + 3 + 2 + 1, Idle: 820}, false},
		{"old kernel", "cpu 10 0 10 80\n", cpuTimes{Total: 100, Idle: 80}, false},
		{"short", "cpu 1 2\n", cpuTimes{}, true},
		{"not a number", "cpu 1 2 x 4 5\n", cpuTimes{}, true},
		{"no cpu line", "cpu0 1 2 3 4\n", cpuTimes{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProcStat(tc.text)
			if (err != nil) != tc.err || got != tc.want {
				t.Errorf("got %+v, %v; want %+v, err %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestCPUUsageMillis(t *testing.T) {
	for _, tc := range []struct {
		prev, cur cpuTimes
		ncpu      int
		want      int64
	}{
		{cpuTimes{1000, 800}, cpuTimes{2000, 1550}, 4, 1000}, // 25% of 4 CPUs
		{cpuTimes{0, 0}, cpuTimes{100, 0}, 2, 2000},
		{cpuTimes{100, 50}, cpuTimes{100, 50}, 2, 0}, // no time passed
		{cpuTimes{200, 50}, cpuTimes{100, 10}, 2, 0}, // counters reset
	} {
		if got := cpuUsageMillis(tc.prev, tc.cur, tc.ncpu); got != tc.want {
			t.Errorf("cpuUsageMillis(%v, %v, %d) = %d, want %d", tc.prev, tc.cur, tc.ncpu, got, tc.want)
		}
	}
}

func TestParseLoadAvg(t *testing.T) {
	if v, err := parseLoadAvg("0.52 0.58 0.59 2/1234 56789\n"); err != nil || v != 0.52 {
		t.Errorf("got %v, %v", v, err)
	}
	for _, bad := range []string{"", "x 1 2"} {
		if _, err := parseLoadAvg(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestHostSamplerReadsFakeProc(t *testing.T) {
	proc := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(proc, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("meminfo", sampleMeminfo)
	write("stat", "cpu 100 0 0 900 0 0 0 0\n")
	write("loadavg", "1.25 1 1 1/1 1\n")
	h := &hostSampler{procDir: proc, stateDir: t.TempDir()}
	s, err := h.sample()
	if err != nil {
		t.Fatal(err)
	}
	if s.Capacity.MemoryMib != 16303428/1024 || s.Usage.MemoryMib != (16303428-9876544)/1024 || s.Load1 != 1.25 ||
		s.Capacity.DiskMib <= 0 || s.Usage.DiskMib < 0 {
		t.Errorf("sample = %+v", s)
	}
	write("stat", "cpu 200 0 0 1000 0 0 0 0\n") // 100 busy of 200 ticks: half the node
	s, _ = h.sample()
	if want := s.Capacity.CpuMillis / 2; s.Usage.CpuMillis != want {
		t.Errorf("cpu usage = %d, want %d", s.Usage.CpuMillis, want)
	}
	os.Remove(filepath.Join(proc, "loadavg"))
	if s, err := h.sample(); err == nil || s.Capacity.MemoryMib == 0 {
		t.Errorf("missing loadavg: %+v, %v", s, err)
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
		got, err := normalizeAddr(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("normalizeAddr(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"http://", "http://h:1/path", "a b:1", "sched:http", "sched:0", "sched:70000"} {
		if got, err := normalizeAddr(bad); err == nil {
			t.Errorf("normalizeAddr(%q) = %q, want error", bad, got)
		}
	}
}

func TestDecideExit(t *testing.T) {
	for _, tc := range []struct {
		policy workload.RestartPolicy
		code   int
		want   exitOutcome
	}{
		{workload.RestartAlways, 0, exitOutcome{Restart: true}},
		{workload.RestartAlways, 1, exitOutcome{Restart: true}},
		{"", 0, exitOutcome{Restart: true}},
		{workload.RestartOnFailure, 0, exitOutcome{Status: workload.StatusTerminated, Reason: api.ReasonCompleted}},
		{workload.RestartOnFailure, 137, exitOutcome{Restart: true}},
		{workload.RestartNever, 0, exitOutcome{Status: workload.StatusTerminated, Reason: api.ReasonCompleted}},
		{workload.RestartNever, 2, exitOutcome{Status: workload.StatusFailed, Reason: api.ReasonError}},
		{workload.RestartNever, -1, exitOutcome{Status: workload.StatusFailed, Reason: api.ReasonError}},
	} {
		if got := decideExit(tc.policy, tc.code); got != tc.want {
			t.Errorf("decideExit(%q, %d) = %+v, want %+v", tc.policy, tc.code, got, tc.want)
		}
	}
}

func TestRestartBackoff(t *testing.T) {
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for step, w := range want {
		if got := restartBackoff(step, time.Second, time.Minute); got != w*time.Second {
			t.Errorf("step %d: %v, want %v", step, got, w*time.Second)
		}
	}
	if got := restartBackoff(1000, time.Second, time.Minute); got != time.Minute {
		t.Errorf("step 1000: %v", got)
	}
}

func TestBackoffJitterAndCap(t *testing.T) {
	b := backoff{min: 200 * time.Millisecond, max: 5 * time.Second}
	base := 200 * time.Millisecond
	for i := 0; i < 12; i++ {
		d := b.next()
		if d < base*8/10 || d > base*12/10 {
			t.Errorf("try %d: %v not within 20%% of %v", i, d, base)
		}
		base = min(base*2, 5*time.Second)
	}
	b.reset()
	if d := b.next(); d > 240*time.Millisecond {
		t.Errorf("after reset: %v", d)
	}
}

func im(id string, st commonpb.ResourceStatus) *commonpb.InstanceMetric {
	return &commonpb.InstanceMetric{InstanceId: id, Status: st}
}

func queueItems(q *statusQueue) []string {
	var out []string
	for _, m := range q.items {
		out = append(out, m.GetInstanceId()+":"+m.GetStatus().String())
	}
	return out
}

func TestStatusQueue(t *testing.T) {
	const (
		C = commonpb.ResourceStatus_CREATING
		R = commonpb.ResourceStatus_RUNNING
		F = commonpb.ResourceStatus_FAILED
		T = commonpb.ResourceStatus_TERMINATED
	)
	q := newStatusQueue(4)
	q.push(im("a", C))
	q.push(im("a", R))
	q.push(im("b", C))
	q.push(im("a", T))
	// Full: pushing b:RUNNING drops a's and b's older non-terminal statuses.
	q.push(im("b", R))
	if got, want := queueItems(q), []string{"a:TERMINATED", "b:RUNNING"}; !slices.Equal(got, want) {
		t.Fatalf("after compaction %v, want %v", got, want)
	}
	// Terminal statuses are never dropped, even past the bound.
	for _, id := range []string{"c", "d", "e", "f"} {
		q.push(im(id, F))
	}
	if q.len() != 6 {
		t.Fatalf("len %d: %v", q.len(), queueItems(q))
	}
	m, ok := q.peek()
	if !ok || m.GetInstanceId() != "a" {
		t.Fatalf("peek = %v", m)
	}
	q.pop(m)
	q.pop(m) // popping what is no longer first does nothing
	if q.len() != 5 {
		t.Fatalf("len after pop %d", q.len())
	}
	// Reset: latest statuses of owned instances first, others kept in order.
	q.reset([]*commonpb.InstanceMetric{im("b", R), im("z", R)})
	if got, want := queueItems(q), []string{"b:RUNNING", "z:RUNNING", "c:FAILED", "d:FAILED", "e:FAILED", "f:FAILED"}; !slices.Equal(got, want) {
		t.Fatalf("after reset %v, want %v", got, want)
	}
	select {
	case <-q.ready:
	default:
		t.Error("reset did not signal")
	}
}

func TestLedger(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ledger.json")
	log := slog.New(slog.DiscardHandler)
	l, err := OpenLedger(path, log)
	if err != nil || l.Len() != 0 {
		t.Fatalf("open empty: %v", err)
	}
	code := 3
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e1 := Entry{InstanceID: "id1", Name: "web-abcde", WorkloadID: "w", Kind: workload.KindPod,
		Definition: []byte(`{"kind":"Pod"}`), CreatedAt: t0.Add(time.Second), Restarts: 2,
		Last: LastStatus{Status: workload.StatusFailed, Reason: api.ReasonError, ExitCode: &code,
			Ports: []workload.PortMapping{{Port: 80, TargetPort: 8080, Protocol: "TCP"}}}}
	e2 := Entry{InstanceID: "id2", Name: "old", Kind: workload.KindFunction, Definition: []byte(`{}`), CreatedAt: t0}
	for _, e := range []Entry{e1, e2} {
		if err := l.Put(e); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode: %v %v", fi, err)
	}
	l2, err := OpenLedger(path, log)
	if err != nil {
		t.Fatal(err)
	}
	list := l2.List()
	if len(list) != 2 || list[0].InstanceID != "id2" || list[1].Restarts != 2 || *list[1].Last.ExitCode != 3 ||
		string(list[1].Definition) != `{"kind":"Pod"}` || list[1].Last.Ports[0].TargetPort != 8080 {
		t.Fatalf("reloaded = %+v", list)
	}
	if err := l2.Delete("id2"); err != nil {
		t.Fatal(err)
	}
	l3, _ := OpenLedger(path, log)
	if _, ok := l3.Get("id2"); ok || l3.Len() != 1 {
		t.Errorf("delete not saved")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 { // ledger.json only
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("temp files left: %v", names)
	}

	// Corrupt: moved aside, empty ledger.
	if err := os.WriteFile(path, []byte(`{"instances":[`), 0o600); err != nil {
		t.Fatal(err)
	}
	l4, err := OpenLedger(path, log)
	if err != nil || l4.Len() != 0 {
		t.Fatalf("corrupt: %v, %d", err, l4.Len())
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("corrupt ledger still in place")
	}
	if aside, _ := filepath.Glob(path + ".corrupt-*"); len(aside) != 1 {
		t.Errorf("aside = %v", aside)
	}
}

func TestRIKMetrics(t *testing.T) {
	s := hostSample{
		Capacity: &commonpb.Resources{CpuMillis: 4000, MemoryMib: 1024, DiskMib: 2048},
		Usage:    &commonpb.Resources{CpuMillis: 1000, MemoryMib: 256, DiskMib: 1024},
	}
	want := `{"cpu":{"total":4,"free":75},"memory":{"total":1073741824,"free":805306368},` +
		`"disks":[{"disk_name":"state","total":2147483648,"free":1073741824}]}`
	if got := rikMetrics(s); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestValidInstanceID(t *testing.T) {
	for _, ok := range []string{"11111111-2222-3333-4444-555555555555", "a", "A_b-9", strings.Repeat("x", 64)} {
		if err := validInstanceID(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "../etc", "a/b", "-a", "_a", "a b", "a.b", "é", strings.Repeat("x", 65), "a\x00"} {
		if err := validInstanceID(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestLedgerConcurrentPuts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.json")
	l, err := OpenLedger(path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.Put(Entry{InstanceID: fmt.Sprintf("i%02d", i), Definition: []byte(`{}`)}); err != nil {
				t.Error(err)
			}
			// Once Put returned, the entry is on disk.
			l2, err := OpenLedger(path, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Error(err)
				return
			}
			if _, ok := l2.Get(fmt.Sprintf("i%02d", i)); !ok {
				t.Errorf("i%02d not on disk after Put", i)
			}
		}()
	}
	wg.Wait()
	l3, _ := OpenLedger(path, slog.New(slog.DiscardHandler))
	if l3.Len() != 50 {
		t.Errorf("%d entries on disk", l3.Len())
	}
}
