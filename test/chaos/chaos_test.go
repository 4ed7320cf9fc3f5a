package chaos

import (
	"cmp"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/testutil"
)

var (
	flagDuration = flag.Duration("chaos.duration", 0, "length of each seeded run (default: the short CI run)")
	flagSeed     = flag.Uint64("chaos.seed", 0, "run this seed (with -chaos.duration)")
	flagSeeds    = flag.String("chaos.seeds", "", "run these comma-separated seeds, one after the other")
)

// ciSeeds and ciDuration are the seeded runs of `go test` without flags.
var ciSeeds = []uint64{1}

const ciDuration = 20 * time.Second

// TestChaos plays seeded random schedules of faults and operations:
//
//	go test ./test/chaos -run TestChaos -chaos.duration 30m -chaos.seed 7
//
// A failing run prints its seed and the timeline that led to it.
func TestChaos(t *testing.T) {
	seeds, dur := ciSeeds, ciDuration
	if *flagDuration > 0 {
		dur = *flagDuration
	}
	if *flagSeed != 0 {
		seeds = []uint64{*flagSeed}
	}
	if *flagSeeds != "" {
		seeds = nil
		for _, f := range strings.Split(*flagSeeds, ",") {
			s, err := strconv.ParseUint(strings.TrimSpace(f), 10, 64)
			if err != nil {
				t.Fatalf("-chaos.seeds %q: %v", *flagSeeds, err)
			}
			seeds = append(seeds, s)
		}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			c := NewCluster(t, binaries(t), clusterOptions(t, true))
			r := NewRun(t, c, seed)
			defer r.Finish()
			r.Play(Schedule(seed, dur, len(c.Nodes), c.RootfsURL != ""))
			end(r)
		})
	}
}

// TestDenseKills is issue 8's first dense run: 45 s of creates and deletes
// on a busy host with 3 riklet, 2 controller and 2 scheduler kills, each
// component restarted 1-3 s later. Before the fix, wanted instances (host
// ports among them) ended TERMINATED and were never replaced.
func TestDenseKills(t *testing.T) {
	r := scenario(t, clusterOptions(t, false), 9, 3)
	defer r.Finish()
	const span = 45 * time.Second
	var plan []Action
	for i, f := range []struct {
		at     time.Duration
		target string
	}{{4, "riklet-node1"}, {9, "controller"}, {14, "scheduler"}, {19, "riklet-node2"}, {26, "controller"}, {31, "riklet-node3"}, {38, "scheduler"}} {
		plan = append(plan, Action{At: f.at * time.Second, Kind: FaultKill, Target: f.target, Dur: time.Second + time.Duration(i%3)*time.Second})
	}
	plan = append(plan, Action{At: 0, Kind: FaultCPU, Dur: span})
	for at := time.Second; at < span; at += 1500 * time.Millisecond {
		kind := opCreate
		if (at/(1500*time.Millisecond))%2 == 1 {
			kind = opDelete
		}
		plan = append(plan, Action{At: at, Kind: kind, Target: workloadWeb, Pick: uint64(at)})
	}
	slices.SortStableFunc(plan, func(a, b Action) int { return cmp.Compare(a.At, b.At) })
	r.Play(plan)
	end(r)
}

// TestSigtermMidDelete is issue 8's second case: a riklet stopped with
// SIGTERM right after a delete reached it, then every component started
// and stopped again within 0.5 s, twice. Before the fix the deleted pod
// kept running with its address free for reuse, unlisted, and --uninstall
// refused.
func TestSigtermMidDelete(t *testing.T) {
	r := scenario(t, clusterOptions(t, false), 6, 0)
	defer r.Finish()
	r.Play([]Action{
		{At: 0, Kind: FaultTerm, Target: "riklet-node1", Dur: 20 * time.Millisecond},
		{At: 0, Kind: FaultTerm, Target: "riklet-node2", Dur: 200 * time.Millisecond},
		{At: 3 * time.Second, Kind: FaultLoopAll, Dur: 400 * time.Millisecond},
		{At: 4 * time.Second, Kind: opDelete, Pick: 1},
		{At: 4 * time.Second, Kind: FaultLoopAll, Dur: 100 * time.Millisecond},
	})
	end(r)
}

// TestHeartbeatEqualsTimeout is issue 8's third case: riklets configured
// with a heartbeat as long as the scheduler's node timeout, on a busy host.
// Before the fix healthy nodes were declared lost and their instances
// rescheduled; now none is, and no instance restarts.
func TestHeartbeatEqualsTimeout(t *testing.T) {
	opts := clusterOptions(t, false)
	opts.NodeTimeout, opts.Heartbeat = 3*time.Second, 3*time.Second
	r := scenario(t, opts, 6, 0)
	defer r.Finish()
	r.NodesStayReady = true
	const span = 15 * time.Second
	plan := []Action{{At: 0, Kind: FaultCPU, Dur: span}}
	for at := time.Second; at < span; at += 2 * time.Second {
		plan = append(plan, Action{At: at, Kind: opCreate, Target: workloadWeb})
	}
	r.Play(plan)
	r.NodesStayReady = false
	r.Settle(2 * time.Minute)
	items, err := r.C.Instances()
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if it.Value.Restarts != 0 || it.Value.Reason != "" {
			r.Fail(fmt.Sprintf("%s restarted %d times (reason %q): a live node was declared lost", it.Name, it.Value.Restarts, it.Value.Reason))
		}
	}
	if !t.Failed() && len(items) < 6 {
		t.Errorf("%d instances, want at least 6", len(items))
	}
	r.DeleteAll(2 * time.Minute)
	r.Uninstall()
}

// scenario starts a cluster with web pods and host-port pods RUNNING.
func scenario(t *testing.T, opts Options, web, hostPorts int) *Run {
	c := NewCluster(t, binaries(t), opts)
	r := NewRun(t, c, 0)
	for range web {
		r.Create(workloadWeb)
	}
	for range hostPorts {
		r.Create(workloadHostPort)
	}
	r.Settle(2 * time.Minute)
	r.start = time.Now() // the plan's offsets count from here
	return r
}

// end heals the cluster, checks it settles and matches the API, deletes
// everything and uninstalls every node.
func end(r *Run) {
	r.Heal()
	r.Settle(3 * time.Minute)
	r.DeleteAll(3 * time.Minute)
	r.Uninstall()
}

// clusterOptions: functions where a guest kernel is available (and wanted).
func clusterOptions(t *testing.T, functions bool) Options {
	if testing.Short() {
		t.Skip("chaos suite: skipped with -short")
	}
	var o Options
	if !functions {
		return o
	}
	dir := os.Getenv("RIK_TEST_KERNEL_DIR")
	if dir == "" {
		dir = "/var/cache/rik-test/kernel"
	}
	ks, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	ms, _ := filepath.Glob(filepath.Join(dir, "lib", "modules", "*"))
	if len(ks) == 1 && len(ms) == 1 {
		if _, err := exec.LookPath("qemu-system-x86_64"); err == nil {
			o.Kernel, o.Modules = ks[0], ms[0]
		}
	}
	if o.Kernel == "" {
		t.Logf("no guest kernel in %s or no QEMU: pods only", dir)
	}
	return o
}

var (
	binOnce sync.Once
	binSet  Bins
	binErr  error
	builtIn string
)

// binaries are RIK_BIN_DIR's (make build), or built once into a temporary
// directory.
func binaries(t *testing.T) Bins {
	t.Helper()
	testutil.RequireRoot(t)
	binOnce.Do(func() {
		dir := os.Getenv("RIK_BIN_DIR")
		if dir == "" {
			if dir, binErr = os.MkdirTemp("", "rik-chaos-bin-"); binErr != nil {
				return
			}
			builtIn = dir
			for _, b := range []struct {
				pkgs []string
				cgo  string
			}{
				{[]string{"./cmd/controller", "./cmd/scheduler", "./cmd/riklet"}, "1"},
				{[]string{"./cmd/rik-init"}, "0"},
			} {
				cmd := exec.Command("go", append([]string{"build", "-o", dir + "/"}, b.pkgs...)...)
				cmd.Dir = "../.."
				cmd.Env = append(os.Environ(), "CGO_ENABLED="+b.cgo)
				if out, err := cmd.CombinedOutput(); err != nil {
					binErr = fmt.Errorf("go build: %w: %s", err, out)
					return
				}
			}
		}
		binSet, binErr = BinsFrom(dir)
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binSet
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if builtIn != "" {
		os.RemoveAll(builtIn)
	}
	os.Exit(code)
}
