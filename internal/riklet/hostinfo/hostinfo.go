// Package hostinfo reads the node's capacity and usage (CPU, memory, the
// state directory's disk, load) from /proc, and its address, for the
// registration and the heartbeats.
package hostinfo

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/rik-org/rik/api/proto/commonpb"
)

const mib = 1 << 20

// memInfo is what riklet reads from /proc/meminfo, in KiB.
type memInfo struct {
	TotalKiB     int64
	AvailableKiB int64
}

// parseMemInfo parses /proc/meminfo. MemAvailable is optional (old kernels):
// free + buffers + cached is used instead.
func parseMemInfo(text string) (memInfo, error) {
	vals := map[string]int64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		vals[key] = n
	}
	total, ok := vals["MemTotal"]
	if !ok || total <= 0 {
		return memInfo{}, fmt.Errorf("parsing meminfo: MemTotal missing")
	}
	avail, ok := vals["MemAvailable"]
	if !ok {
		avail = vals["MemFree"] + vals["Buffers"] + vals["Cached"]
	}
	if avail > total {
		avail = total
	}
	return memInfo{TotalKiB: total, AvailableKiB: avail}, nil
}

// cpuTimes are the aggregate CPU counters of /proc/stat, in ticks.
type cpuTimes struct {
	Total uint64
	Idle  uint64 // idle + iowait
}

// parseProcStat parses the aggregate "cpu" line of /proc/stat.
func parseProcStat(text string) (cpuTimes, error) {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "cpu" {
			continue
		}
		if len(f) < 5 {
			return cpuTimes{}, fmt.Errorf("parsing /proc/stat: short cpu line")
		}
		var t cpuTimes
		// user nice system idle iowait irq softirq steal (guest fields are
		// already counted in user and nice).
		for i, s := range f[1:] {
			if i >= 8 {
				break
			}
			n, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return cpuTimes{}, fmt.Errorf("parsing /proc/stat: field %d: %w", i+1, err)
			}
			t.Total += n
			if i == 3 || i == 4 {
				t.Idle += n
			}
		}
		return t, nil
	}
	return cpuTimes{}, fmt.Errorf("parsing /proc/stat: no cpu line")
}

// cpuUsageMillis is the CPU used between two samples, in millicores of a
// node with ncpu CPUs.
func cpuUsageMillis(prev, cur cpuTimes, ncpu int) int64 {
	if cur.Total <= prev.Total || cur.Idle < prev.Idle {
		return 0
	}
	total := cur.Total - prev.Total
	idle := cur.Idle - prev.Idle
	if idle > total {
		idle = total
	}
	return int64(float64(total-idle) / float64(total) * float64(ncpu) * 1000)
}

// parseLoadAvg returns the 1-minute load average from /proc/loadavg.
func parseLoadAvg(text string) (float64, error) {
	f := strings.Fields(text)
	if len(f) == 0 {
		return 0, fmt.Errorf("parsing loadavg: empty")
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("parsing loadavg: %w", err)
	}
	return v, nil
}

// diskMiB returns the size and the used space of the filesystem holding path.
func diskMiB(path string) (total, used int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := uint64(st.Bsize)
	return int64(st.Blocks * bs / mib), int64((st.Blocks - st.Bfree) * bs / mib), nil
}

// Address is the first non-loopback IPv4 address of an interface that is
// up and not rik's own (rik0, rikvx, veths and TAPs: names starting with
// "rik"), else 127.0.0.1.
func Address() string {
	ifaces, err := net.Interfaces()
	if err != nil {
		return "127.0.0.1"
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 || strings.HasPrefix(ifc.Name, "rik") {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip4 := n.IP.To4(); ip4 != nil && !ip4.IsLoopback() {
					return ip4.String()
				}
			}
		}
	}
	return "127.0.0.1"
}

// Sampler reads the node's capacity and usage. It keeps the previous
// /proc/stat sample to compute CPU usage as a delta.
type Sampler struct {
	procDir  string // "/proc"
	stateDir string // its filesystem is the node's disk

	mu      sync.Mutex
	prevCPU cpuTimes
}

// New returns a sampler reading procDir ("/proc") and the filesystem of
// stateDir.
func New(procDir, stateDir string) *Sampler {
	return &Sampler{procDir: procDir, stateDir: stateDir}
}

// Sample is one reading of the node.
type Sample struct {
	Capacity *commonpb.Resources
	Usage    *commonpb.Resources
	Load1    float64
}

func (h *Sampler) readProc(name string) (string, error) {
	b, err := os.ReadFile(h.procDir + "/" + name)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", name, err)
	}
	return string(b), nil
}

// Sample reads capacity and usage; a part it cannot read stays zero and is
// returned as an error alongside the rest.
func (h *Sampler) Sample() (Sample, error) {
	ncpu := runtime.NumCPU()
	s := Sample{
		Capacity: &commonpb.Resources{CpuMillis: int64(ncpu) * 1000},
		Usage:    &commonpb.Resources{},
	}
	var errs []string
	if text, err := h.readProc("meminfo"); err != nil {
		errs = append(errs, err.Error())
	} else if mi, err := parseMemInfo(text); err != nil {
		errs = append(errs, err.Error())
	} else {
		s.Capacity.MemoryMib = mi.TotalKiB / 1024
		s.Usage.MemoryMib = (mi.TotalKiB - mi.AvailableKiB) / 1024
	}
	if text, err := h.readProc("stat"); err != nil {
		errs = append(errs, err.Error())
	} else if cur, err := parseProcStat(text); err != nil {
		errs = append(errs, err.Error())
	} else {
		h.mu.Lock()
		s.Usage.CpuMillis = cpuUsageMillis(h.prevCPU, cur, ncpu)
		h.prevCPU = cur
		h.mu.Unlock()
	}
	if text, err := h.readProc("loadavg"); err != nil {
		errs = append(errs, err.Error())
	} else if l, err := parseLoadAvg(text); err != nil {
		errs = append(errs, err.Error())
	} else {
		s.Load1 = l
	}
	if total, used, err := diskMiB(h.stateDir); err != nil {
		errs = append(errs, err.Error())
	} else {
		s.Capacity.DiskMib = total
		s.Usage.DiskMib = used
	}
	if len(errs) > 0 {
		return s, fmt.Errorf("sampling host: %s", strings.Join(errs, "; "))
	}
	return s, nil
}

// RIKMetrics is the JSON `metrics` string of a WorkerMetric, in the shape
// of RIK's node_metrics crate (cpu free in percent, sizes in bytes).
func RIKMetrics(s Sample) string {
	type cpu struct {
		Total int     `json:"total"`
		Free  float64 `json:"free"`
	}
	type memory struct {
		Total int64 `json:"total"`
		Free  int64 `json:"free"`
	}
	type disk struct {
		DiskName string `json:"disk_name"`
		Total    int64  `json:"total"`
		Free     int64  `json:"free"`
	}
	out := struct {
		CPU    cpu    `json:"cpu"`
		Memory memory `json:"memory"`
		Disks  []disk `json:"disks"`
	}{
		CPU:    cpu{Total: int(s.Capacity.GetCpuMillis() / 1000), Free: 100},
		Memory: memory{Total: s.Capacity.GetMemoryMib() * mib, Free: (s.Capacity.GetMemoryMib() - s.Usage.GetMemoryMib()) * mib},
		Disks:  []disk{{DiskName: "state", Total: s.Capacity.GetDiskMib() * mib, Free: (s.Capacity.GetDiskMib() - s.Usage.GetDiskMib()) * mib}},
	}
	if c := s.Capacity.GetCpuMillis(); c > 0 {
		out.CPU.Free = 100 - float64(s.Usage.GetCpuMillis())*100/float64(c)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return "{}"
	}
	return string(b)
}
