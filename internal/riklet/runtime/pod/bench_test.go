package pod

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/workload"
)

// BenchmarkStartRunning measures create -> RUNNING of one-container pods
// with a cached image, one after the other, b.N pods kept running, and the
// riklet heap each running pod costs. Run with -benchtime=50x.
func BenchmarkStartRunning(b *testing.B) {
	r, c := benchRuntime(b)
	ctx := context.Background()
	var before goruntime.MemStats
	goruntime.GC()
	goruntime.ReadMemStats(&before)
	goroutines := goruntime.NumGoroutine()

	var insts []runtime.Instance
	defer func() { stopAll(b, r, insts) }()
	durs := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		inst := instance("bench", c)
		began := time.Now()
		st, err := r.Start(ctx, inst)
		durs = append(durs, time.Since(began))
		if err != nil || st.Phase != runtime.PhaseRunning {
			b.Fatalf("start %d: %+v %v", i, st, err)
		}
		insts = append(insts, inst)
	}
	b.StopTimer()
	var after goruntime.MemStats
	goruntime.GC()
	goruntime.ReadMemStats(&after)
	reportPercentiles(b, durs, "")
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(b.N)/1024, "KiB-heap/pod")
	b.ReportMetric(float64(goruntime.NumGoroutine()-goroutines)/float64(b.N), "goroutines/pod")
	b.ReportMetric(float64(childRSS("runc"))/float64(b.N), "KiB-runc-rss/pod")
	b.ReportMetric(float64(childRSS("sleep"))/float64(b.N), "KiB-container-rss/pod")
}

// BenchmarkStartRunningSeccomp measures create -> RUNNING of one-container
// pods with Docker's default seccomp profile (as always) and without any
// (a knob only tests have), alternating pod by pod so that both see the
// same machine. Run with -benchtime=100x (50 pods each).
func BenchmarkStartRunningSeccomp(b *testing.B) {
	r, c := benchRuntime(b)
	ctx := context.Background()
	var insts []runtime.Instance
	defer func() { stopAll(b, r, insts) }()
	durs, cpu := map[bool][]time.Duration{}, map[bool][]time.Duration{}
	i := 0
	for b.Loop() {
		off := i%2 == 1
		i++
		r.noSeccomp = off
		inst := instance("bench", c)
		began := time.Now()
		st, err := r.Start(ctx, inst)
		durs[off] = append(durs[off], time.Since(began))
		if err != nil || st.Phase != runtime.PhaseRunning {
			b.Fatalf("start %d: %+v %v", i, st, err)
		}
		insts = append(insts, inst)
		b.StopTimer()
		cpu[off] = append(cpu[off], initCPU(b, r, inst))
		b.StartTimer()
	}
	reportPercentiles(b, durs[false], "-seccomp")
	reportPercentiles(b, durs[true], "-no-seccomp")
	reportPercentiles(b, cpu[false], "-init-cpu-seccomp")
	reportPercentiles(b, cpu[true], "-init-cpu-no-seccomp")
}

// initCPU returns the CPU time the container's init has used (runc's init
// code, which loads the seccomp filter, then the program it execs), a
// measure the machine's load does not stretch as it does wall time.
func initCPU(b *testing.B, r *Runtime, inst runtime.Instance) time.Duration {
	st, err := r.ctrs.State(context.Background(), runcID(inst.ID, inst.Workload.Spec.Containers[0].Name))
	if err != nil {
		b.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(st.Pid), "schedstat"))
	if err != nil {
		b.Fatal(err)
	}
	ns, err := strconv.ParseInt(strings.Fields(string(raw))[0], 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	return time.Duration(ns)
}

// benchRuntime returns a pod runtime whose image is pulled, and a
// container of it that sleeps.
func benchRuntime(b *testing.B) (*Runtime, workload.Container) {
	e := setup(b)
	e.cfg.Logger = slog.New(slog.DiscardHandler)
	r := e.runtime(b)
	c := workload.Container{Name: "c", Image: e.ref, Command: []string{"sleep", "3600"}}
	if _, err := r.Images().Pull(context.Background(), e.ref, nil); err != nil {
		b.Fatal(err)
	}
	return r, c
}

// reportPercentiles reports the median and 95th percentile of durs.
func reportPercentiles(b *testing.B, durs []time.Duration, suffix string) {
	if len(durs) == 0 {
		return
	}
	slices.Sort(durs)
	b.ReportMetric(float64(durs[len(durs)/2].Microseconds())/1000, "ms-median"+suffix)
	b.ReportMetric(float64(durs[(len(durs)*95+99)/100-1].Microseconds())/1000, "ms-p95"+suffix)
}

// stopAll stops insts, in parallel.
func stopAll(b *testing.B, r *Runtime, insts []runtime.Instance) {
	var wg sync.WaitGroup
	for _, inst := range insts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.Stop(context.Background(), inst); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
}

// childRSS sums the resident memory (KiB) of this process's children named
// comm (the `runc run` parents of the containers).
func childRSS(comm string) int64 {
	var total int64
	for _, c := range children() {
		if !strings.HasSuffix(c.name, "("+comm+")") {
			continue
		}
		status, _ := os.ReadFile(filepath.Join(c.dir, "status"))
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				total += kb
			}
		}
	}
	return total
}
