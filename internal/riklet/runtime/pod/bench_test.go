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
	e := setup(b)
	e.cfg.Logger = slog.New(slog.DiscardHandler)
	r := e.runtime(b)
	ctx := context.Background()
	c := workload.Container{Name: "c", Image: e.ref, Command: []string{"sleep", "3600"}}
	if _, err := r.Images().Pull(ctx, e.ref, nil); err != nil {
		b.Fatal(err)
	}
	var before goruntime.MemStats
	goruntime.GC()
	goruntime.ReadMemStats(&before)
	goroutines := goruntime.NumGoroutine()

	var insts []runtime.Instance
	defer func() {
		var wg sync.WaitGroup
		for _, inst := range insts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := r.Stop(ctx, inst); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
	}()
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
	slices.Sort(durs)
	b.ReportMetric(float64(durs[len(durs)/2].Microseconds())/1000, "ms-median")
	b.ReportMetric(float64(durs[(len(durs)*95+99)/100-1].Microseconds())/1000, "ms-p95")
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(b.N)/1024, "KiB-heap/pod")
	b.ReportMetric(float64(goruntime.NumGoroutine()-goroutines)/float64(b.N), "goroutines/pod")
	b.ReportMetric(float64(childRSS("runc"))/float64(b.N), "KiB-runc-rss/pod")
	b.ReportMetric(float64(childRSS("sleep"))/float64(b.N), "KiB-container-rss/pod")
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
