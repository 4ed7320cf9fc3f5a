package hostinfo

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rik-org/rik/api/proto/commonpb"
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

func TestSamplerReadsFakeProc(t *testing.T) {
	proc := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(proc, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("meminfo", sampleMeminfo)
	write("stat", "cpu 100 0 0 900 0 0 0 0\n")
	write("loadavg", "1.25 1 1 1/1 1\n")
	h := New(proc, t.TempDir())
	s, err := h.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if s.Capacity.MemoryMib != 16303428/1024 || s.Usage.MemoryMib != (16303428-9876544)/1024 || s.Load1 != 1.25 ||
		s.Capacity.DiskMib <= 0 || s.Usage.DiskMib < 0 {
		t.Errorf("sample = %+v", s)
	}
	write("stat", "cpu 200 0 0 1000 0 0 0 0\n") // 100 busy of 200 ticks: half the node
	s, _ = h.Sample()
	if want := s.Capacity.CpuMillis / 2; s.Usage.CpuMillis != want {
		t.Errorf("cpu usage = %d, want %d", s.Usage.CpuMillis, want)
	}
	os.Remove(filepath.Join(proc, "loadavg"))
	if s, err := h.Sample(); err == nil || s.Capacity.MemoryMib == 0 {
		t.Errorf("missing loadavg: %+v, %v", s, err)
	}
}

func TestRIKMetrics(t *testing.T) {
	s := Sample{
		Capacity: &commonpb.Resources{CpuMillis: 4000, MemoryMib: 1024, DiskMib: 2048},
		Usage:    &commonpb.Resources{CpuMillis: 1000, MemoryMib: 256, DiskMib: 1024},
	}
	want := `{"cpu":{"total":4,"free":75},"memory":{"total":1073741824,"free":805306368},` +
		`"disks":[{"disk_name":"state","total":2147483648,"free":1073741824}]}`
	if got := RIKMetrics(s); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}
