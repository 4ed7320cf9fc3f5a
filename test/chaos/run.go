package chaos

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/workload"
)

// Kinds of fault.
const (
	FaultKill        = "kill -9 + restart"
	FaultTerm        = "SIGTERM mid-operation + restart"
	FaultLoop        = "fast restart loop"
	FaultPartition   = "node cut off (veth down)"
	FaultDiskFull    = "store disk full"
	FaultCPU         = "CPU starvation"
	FaultLoopAll     = "all components fast restart"
	opCreate         = "create"
	opDelete         = "delete"
	workloadWeb      = "chaos-web"
	workloadHostPort = "chaos-hp"
	workloadFn       = "chaos-fn"
	hostPortBase     = 8081
)

// Invariants checked (continuously, and at the end).
const (
	InvGoneAfterStop = "gone from the API only after its node stopped it"
	InvWantedLives   = "a wanted instance never ends nor vanishes"
	InvUniqueAddr    = "no duplicate address"
	InvReasons       = "every terminal status has a reason"
	InvSettles       = "no instance stuck: wanted RUNNING, deleted gone"
	InvServes        = "every RUNNING instance answers (IP, host port)"
	InvNodeMatches   = "node state (containers, VMs, leases, netns, veths, TAPs, rules, cgroups, ledger) matches the API"
	InvNodeEmpty     = "nothing left after deleting everything"
	InvUninstall     = "riklet --uninstall leaves no chain, bridge nor TAP"
	InvNodeReady     = "a live node is never declared lost"
)

// Action is one step of a schedule, at an offset from the start.
type Action struct {
	At     time.Duration
	Kind   string // an op or a fault
	Target string // component ("scheduler", "controller", "riklet-nodeN"), workload or node
	Dur    time.Duration
	Pick   uint64 // chooses among what exists when the action runs
}

func (a Action) String() string {
	s := fmt.Sprintf("%s %s", a.Kind, a.Target)
	if a.Dur > 0 {
		s += " for " + a.Dur.Round(10*time.Millisecond).String()
	}
	return s
}

// Schedule draws a random schedule of ops and faults for duration from seed.
func Schedule(seed uint64, duration time.Duration, nodes int, functions bool) []Action {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var out []Action
	dur := func(lo, hi float64) time.Duration {
		return time.Duration((lo + rng.Float64()*(hi-lo)) * float64(time.Second))
	}
	node := func() string { return fmt.Sprintf("node%d", 1+rng.IntN(nodes)) }
	component := func() string {
		switch r := rng.IntN(10); {
		case r < 5:
			return "riklet-" + node()
		case r < 8:
			return "scheduler"
		default:
			return "controller"
		}
	}
	for at := dur(0.2, 1); at < duration; at += dur(0.4, 1.8) {
		a := Action{At: at, Pick: rng.Uint64()}
		switch r := rng.IntN(20); {
		case r < 10:
			a.Kind, a.Target = opCreate, workloadWeb
		case r < 12:
			a.Kind, a.Target = opCreate, workloadHostPort
		case r < 13 && functions:
			a.Kind, a.Target = opCreate, workloadFn
		default:
			a.Kind = opDelete
		}
		out = append(out, a)
	}
	for at := dur(1, 3); at < duration; at += dur(2, 6) {
		a := Action{At: at, Pick: rng.Uint64()}
		switch r := rng.IntN(100); {
		case r < 35:
			a.Kind, a.Target, a.Dur = FaultKill, component(), dur(0, 3)
		case r < 50:
			a.Kind, a.Target, a.Dur = FaultTerm, "riklet-"+node(), dur(0, 0.5)
		case r < 60:
			a.Kind, a.Target, a.Dur = FaultLoop, component(), dur(0.1, 0.5)
		case r < 63:
			a.Kind, a.Dur = FaultLoopAll, dur(0.1, 0.5)
		case r < 75:
			a.Kind, a.Target, a.Dur = FaultPartition, node(), dur(1, 10)
		case r < 85:
			a.Kind, a.Dur = FaultDiskFull, dur(0.5, 4)
		default:
			a.Kind, a.Dur = FaultCPU, dur(2, 10)
		}
		out = append(out, a)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At < out[j].At })
	return out
}

// Run drives a cluster through a schedule and checks the invariants.
type Run struct {
	C    *Cluster
	Seed uint64
	t    testing.TB
	tl   *Timeline
	cnt  *Counters

	image string
	start time.Time

	mu       sync.Mutex
	seq      int
	tracked  map[string]*tracked // by instance name
	last     map[string]Item     // last API view, by name
	procBusy map[string]bool
	nodeBusy map[string]bool
	violated map[string]bool // violations reported, by invariant and key

	// NodesStayReady: no fault takes a node down; one seen NotReady is a
	// violation (the heartbeat scenario).
	NodesStayReady bool
	wg             sync.WaitGroup
	stop           chan struct{}
}

// tracked is an instance the run created.
type tracked struct {
	name, workload string
	id             string
	asked          time.Time // create requested
	seen           bool      // listed by the API once
	deleted        bool      // delete requested (accepted or to retry)
	deleteDone     bool      // the API accepted the delete
	gone           time.Time // no longer listed, after its delete
	verified       bool
}

// NewRun prepares a run over c: it creates the workloads.
func NewRun(t testing.TB, c *Cluster, seed uint64) *Run {
	t.Helper()
	r := &Run{C: c, Seed: seed, t: t, tl: newTimeline(), cnt: newCounters(),
		image: c.Registry + "/busybox:latest", tracked: map[string]*tracked{}, last: map[string]Item{},
		procBusy: map[string]bool{}, nodeBusy: map[string]bool{}, stop: make(chan struct{})}
	r.start = time.Now()
	r.tl.start = r.start
	defs := []string{PodDef(workloadWeb, r.image, 0)}
	for i := range 3 {
		defs = append(defs, PodDef(fmt.Sprintf("%s%d", workloadHostPort, i), r.image, hostPortBase+i))
	}
	if c.RootfsURL != "" {
		defs = append(defs, FunctionDef(workloadFn, c.RootfsURL, hostPortBase+10))
	}
	for _, d := range defs {
		r.retry(30*time.Second, "creating workload", func() error { return c.CreateWorkload(d) })
	}
	return r
}

// retry calls fn until it works, failing the test after timeout.
func (r *Run) retry(timeout time.Duration, what string, fn func() error) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			r.Fail(fmt.Sprintf("%s: %v", what, err))
			r.t.FailNow()
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// Fail records a failure with the seed (the timeline is printed at the end).
func (r *Run) Fail(msg string) {
	r.t.Helper()
	r.tl.Add("FAILURE: %s", msg)
	r.t.Errorf("seed %d: %s", r.Seed, msg)
}

// Play runs schedule while the monitor checks the invariants, then waits
// for the actions still in progress.
func (r *Run) Play(schedule []Action) {
	monitorDone := make(chan struct{})
	go func() { defer close(monitorDone); r.monitor() }()
	for _, a := range schedule {
		if d := time.Until(r.start.Add(a.At)); d > 0 {
			time.Sleep(d)
		}
		r.wg.Add(1)
		go func() { defer r.wg.Done(); r.do(a) }()
	}
	r.wg.Wait()
	close(r.stop)
	<-monitorDone
}

// Create asks for an instance of wl (op).
func (r *Run) Create(wl string) {
	r.mu.Lock()
	if wl == workloadHostPort {
		// One per host-port workload; three host ports, three nodes.
		used := map[string]bool{}
		for _, tr := range r.tracked {
			if !tr.deleted && strings.HasPrefix(tr.workload, workloadHostPort) {
				used[tr.workload] = true
			}
		}
		wl = ""
		for i := range 3 {
			if w := fmt.Sprintf("%s%d", workloadHostPort, i); !used[w] {
				wl = w
				break
			}
		}
	}
	if wl == workloadFn && r.C.RootfsURL == "" {
		wl = ""
	}
	if wl == workloadFn {
		for _, tr := range r.tracked {
			if !tr.deleted && tr.workload == workloadFn {
				wl = "" // one Function at a time: QEMU under TCG is slow
			}
		}
	}
	if wl == "" {
		r.mu.Unlock()
		return
	}
	r.seq++
	name := fmt.Sprintf("c%d-%s", r.seq, strings.TrimPrefix(wl, "chaos-"))
	tr := &tracked{name: name, workload: wl, asked: time.Now()}
	r.tracked[name] = tr
	r.mu.Unlock()
	err := r.C.CreateInstance(wl, name)
	r.tl.Add("create %s (%s): %v", name, wl, errOK(err))
}

// Delete deletes a live instance chosen by pick (op).
func (r *Run) Delete(pick uint64) { r.DeleteOn("", pick) }

// DeleteOn deletes a live instance chosen by pick, among those last seen on
// node (any node when "").
func (r *Run) DeleteOn(node string, pick uint64) {
	r.mu.Lock()
	var cands []*tracked
	for _, tr := range r.tracked {
		if !tr.deleted && tr.id != "" && (node == "" || r.last[tr.name].Value.Node == node) {
			cands = append(cands, tr)
		}
	}
	if len(cands) == 0 {
		r.mu.Unlock()
		return
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].name < cands[j].name })
	tr := cands[pick%uint64(len(cands))]
	tr.deleted = true
	r.mu.Unlock()
	r.sendDelete(tr)
}

func (r *Run) sendDelete(tr *tracked) {
	err := r.C.DeleteInstance(tr.id)
	r.tl.Add("delete %s (%s): %v", tr.name, tr.id, errOK(err))
	if err == nil {
		r.mu.Lock()
		tr.deleteDone = true
		r.mu.Unlock()
	}
}

func errOK(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// do runs one action.
func (r *Run) do(a Action) {
	switch a.Kind {
	case opCreate:
		r.Create(a.Target)
	case opDelete:
		r.Delete(a.Pick)
	case FaultKill, FaultTerm, FaultLoop:
		r.procFault(a)
	case FaultLoopAll:
		r.restartAll(a.Dur)
	case FaultPartition:
		n := r.node(a.Target)
		if n == nil || !r.begin(r.nodeBusy, a.Target, a) {
			return
		}
		defer r.release(r.nodeBusy, a.Target)
		if err := r.C.SetLinkUp(n, false); err != nil {
			r.Fail(fmt.Sprintf("cutting %s off: %v", n.Name, err))
			return
		}
		time.Sleep(a.Dur)
		if err := r.C.SetLinkUp(n, true); err != nil {
			r.Fail(fmt.Sprintf("bringing %s back: %v", n.Name, err))
		}
		r.tl.Add("%s back on the network", n.Name)
	case FaultDiskFull:
		if !r.begin(r.nodeBusy, "store", a) {
			return
		}
		defer r.release(r.nodeBusy, "store")
		free, err := r.C.FillStore()
		if err != nil {
			r.Fail(fmt.Sprintf("filling the store: %v", err))
			return
		}
		time.Sleep(a.Dur)
		free()
		r.tl.Add("store freed")
	case FaultCPU:
		r.cnt.fault(a.Kind)
		r.tl.Add("fault: %s", a)
		Hog(2, a.Dur)
	}
}

// procFault kills, stops or restart-loops one component, then restarts it.
func (r *Run) procFault(a Action) {
	p := r.proc(a.Target)
	if p == nil || !r.begin(r.procBusy, a.Target, a) {
		return
	}
	defer r.release(r.procBusy, a.Target)
	switch a.Kind {
	case FaultKill:
		p.Stop(syscall.SIGKILL)
		time.Sleep(a.Dur)
	case FaultTerm:
		r.DeleteOn(strings.TrimPrefix(a.Target, "riklet-"), a.Pick) // an operation in flight...
		time.Sleep(a.Dur)
		p.Stop(syscall.SIGTERM) // ...when the riklet is told to stop
	case FaultLoop:
		for range 3 {
			p.Stop(syscall.SIGKILL)
			_ = p.Start()
			time.Sleep(a.Dur)
		}
		p.Stop(syscall.SIGTERM)
	}
	r.restart(p)
}

// restartAll stops every component and starts them again twice within d,
// then starts them for good (issue 8's double fast restart).
func (r *Run) restartAll(d time.Duration) {
	names := []string{"scheduler", "controller"}
	for _, n := range r.C.Nodes {
		names = append(names, "riklet-"+n.Name)
	}
	var claimed []string
	for _, n := range names {
		if r.claim(r.procBusy, n) {
			claimed = append(claimed, n)
		}
	}
	defer func() {
		for _, n := range claimed {
			r.release(r.procBusy, n)
		}
	}()
	if len(claimed) != len(names) {
		return
	}
	r.cnt.fault(FaultLoopAll)
	r.tl.Add("fault: %s within %s", FaultLoopAll, d.Round(10*time.Millisecond))
	for range 2 {
		for _, n := range names {
			_ = r.proc(n).Start()
		}
		time.Sleep(d)
		for _, n := range names {
			r.proc(n).Signal(syscall.SIGTERM)
		}
		for _, n := range names {
			r.proc(n).Stop(syscall.SIGTERM)
		}
	}
	for _, n := range names {
		r.restart(r.proc(n))
	}
}

func (r *Run) restart(p *Proc) {
	if err := p.Start(); err != nil {
		r.Fail(fmt.Sprintf("restarting %s: %v", p.Name, err))
	}
	r.tl.Add("%s started", p.Name)
}

// begin claims k for fault a (one fault at a time per component or node),
// counts and logs it; false: k is busy, the fault is skipped.
func (r *Run) begin(m map[string]bool, k string, a Action) bool {
	if !r.claim(m, k) {
		return false
	}
	r.cnt.fault(a.Kind)
	r.tl.Add("fault: %s", a)
	return true
}

func (r *Run) claim(m map[string]bool, k string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m[k] {
		return false
	}
	m[k] = true
	return true
}

func (r *Run) release(m map[string]bool, k string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(m, k)
}

func (r *Run) proc(name string) *Proc {
	for _, p := range r.C.procs {
		if p.Name == name {
			return p
		}
	}
	return nil
}

func (r *Run) node(name string) *Node {
	for _, n := range r.C.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Hog runs n busy loops for d (CPU starvation).
func Hog(n int, d time.Duration) {
	var cmds []*exec.Cmd
	for range n {
		cmd := exec.Command("sh", "-c", "while :; do :; done")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if startOnSpawner(cmd) == nil {
			cmds = append(cmds, cmd)
		}
	}
	time.Sleep(d)
	for _, c := range cmds {
		_ = c.Process.Kill()
		_ = c.Wait()
	}
}

// ---- the timeline and the counts

// Timeline is what happened, in order, for a failing run's report.
type Timeline struct {
	mu     sync.Mutex
	start  time.Time
	events []string
}

func newTimeline() *Timeline { return &Timeline{start: time.Now()} }

// Add records an event.
func (tl *Timeline) Add(format string, args ...any) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.events = append(tl.events, fmt.Sprintf("%8.2fs  %s", time.Since(tl.start).Seconds(), fmt.Sprintf(format, args...)))
}

// Tail returns the last n events.
func (tl *Timeline) Tail(n int) []string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if len(tl.events) <= n {
		return slices.Clone(tl.events)
	}
	return slices.Clone(tl.events[len(tl.events)-n:])
}

// Counters count faults, invariant checks and violations.
type Counters struct {
	mu         sync.Mutex
	faults     map[string]int
	checks     map[string]int
	violations map[string]int
}

func newCounters() *Counters {
	return &Counters{faults: map[string]int{}, checks: map[string]int{}, violations: map[string]int{}}
}

func (c *Counters) fault(kind string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults[kind]++
}

func (c *Counters) check(inv string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checks[inv] += n
}

func (c *Counters) violation(inv string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.violations[inv]++
}

// Report is the run's figures: faults injected, and per invariant the
// checks made, violations expected (0) and observed.
func (r *Run) Report() string {
	c := r.cnt
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d, %s\nfaults injected:\n", r.Seed, time.Since(r.start).Round(time.Second))
	for _, k := range []string{FaultKill, FaultTerm, FaultLoop, FaultLoopAll, FaultPartition, FaultDiskFull, FaultCPU} {
		fmt.Fprintf(&b, "  %-36s %d\n", k, c.faults[k])
	}
	fmt.Fprintf(&b, "invariants (checks; violations expected 0, observed):\n")
	for _, k := range []string{InvGoneAfterStop, InvWantedLives, InvUniqueAddr, InvReasons, InvNodeReady, InvSettles, InvServes, InvNodeMatches, InvNodeEmpty, InvUninstall} {
		if c.checks[k] == 0 && c.violations[k] == 0 {
			continue
		}
		fmt.Fprintf(&b, "  %-100s checks %6d  violations %d\n", k, c.checks[k], c.violations[k])
	}
	r.mu.Lock()
	created, deleted, fns := 0, 0, 0
	for _, tr := range r.tracked {
		if tr.seen {
			created++
			if tr.workload == workloadFn {
				fns++
			}
		}
		if tr.deleted {
			deleted++
		}
	}
	r.mu.Unlock()
	fmt.Fprintf(&b, "instances created %d (%d Functions), deleted %d (during the run and at the end)\n", created, fns, deleted)
	return b.String()
}

// Finish logs the report, and on failure the seed, the timeline and the
// logs. With RIK_CHAOS_REPORT=dir the report is also written there.
func (r *Run) Finish() {
	rep := r.Report()
	r.t.Logf("\n%s", rep)
	if dir := os.Getenv("RIK_CHAOS_REPORT"); dir != "" {
		_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("chaos-seed-%d.txt", r.Seed)), []byte(rep), 0o644)
	}
	if r.t.Failed() {
		r.t.Logf("replay with: go test ./test/chaos -run %s -chaos.seed %d\ntimeline (last events):\n%s",
			r.t.Name(), r.Seed, strings.Join(r.tl.Tail(400), "\n"))
		r.C.DumpLogs(80)
	}
}

func terminal(s workload.Status) bool { return s.Terminal() }
