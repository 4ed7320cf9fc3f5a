package pod

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/rik-org/rik/internal/riklet/podnet"
	"github.com/rik-org/rik/internal/workload"
)

// fakeNode is a stateful stand-in for what a pod runtime touches on its
// node: runc and its containers, their init processes, the pod network,
// rootfs mounts and cgroups (it implements containers, processes, network,
// mounts, cgroupHost and Exposer). It outlives a Runtime, as the node
// outlives a riklet: restart models the riklet going away.
//
// A container's command (process.args of its config.json, as written by
// the runtime) says how its init behaves, word by word:
//
//	print:TEXT   writes TEXT and a newline to the container's log
//	exit:N       ends at once with code N
//	ignore-term  ignores SIGTERM (only SIGKILL ends it)
//	fail-run     runc run fails before the init starts (as a missing binary)
//	hang-run     runc run starts the init, then hangs until its context ends
//
// otherwise it runs until it is signalled.
type fakeNode struct {
	mu       sync.Mutex
	nextPid  int
	ctrs     map[string]*fakeCtr // by runc id
	records  map[string]bool     // runc ids runc keeps a directory of, loadable or not
	procs    map[int]*fakeProc
	mounted  map[string]bool // bundles with a mounted rootfs
	cgroups  map[string]bool // paths runc made
	oom      map[string]bool // cgroups that saw an OOM kill
	nets     map[string]podnet.Net
	nextIP   byte
	exposed  map[string][]workload.PortMapping
	signals  map[string][]syscall.Signal // by runc id
	steps    []string                    // the host changes asked for, in order
	failStep int                         // fail the failStep-th change (1-based); 0: none
	onExpose func(id string)             // called once an exposure is made
}

type fakeCtr struct {
	id, bundle, cgroup string
	pid                int
}

// fakeProc is a container's init.
type fakeProc struct {
	ctr        string
	child      bool // a child of the running riklet
	ignoreTerm bool
	ended      bool
	code       int
	done       chan struct{} // closed when it ends
	waited     bool          // its exit was collected (not a zombie)
}

func newFakeNode() *fakeNode {
	return &fakeNode{
		nextPid: 1000, ctrs: map[string]*fakeCtr{}, records: map[string]bool{}, procs: map[int]*fakeProc{},
		mounted: map[string]bool{}, cgroups: map[string]bool{}, oom: map[string]bool{}, nets: map[string]podnet.Net{},
		exposed: map[string][]workload.PortMapping{}, signals: map[string][]syscall.Signal{},
	}
}

// host returns the node as a Runtime's host.
func (n *fakeNode) host() host {
	return host{ctrs: n, procs: n, net: n, mounts: n, cgroups: n}
}

var errInjected = errors.New("injected failure")

// step records a change of the host; it fails the failStep-th one. Call
// with n.mu held.
func (n *fakeNode) step(what string) error {
	n.steps = append(n.steps, what)
	if len(n.steps) == n.failStep {
		return fmt.Errorf("%s: %w", what, errInjected)
	}
	return nil
}

// end ends process pid with code, once. Call with n.mu held.
func (n *fakeNode) end(pid, code int) {
	p := n.procs[pid]
	if p == nil || p.ended {
		return
	}
	p.ended, p.code = true, code
	close(p.done)
}

// restart models the riklet going away and a new one starting: the
// containers' inits are re-parented to init, which reaps the ended ones.
func (n *fakeNode) restart() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range n.procs {
		p.child = false
		if p.ended {
			p.waited = true
		}
	}
}

// exit ends the init of container rid with code, as from outside.
func (n *fakeNode) exit(rid string, code int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if c := n.ctrs[rid]; c != nil {
		n.end(c.pid, code)
	}
}

// Run implements containers.
func (n *fakeNode) Run(ctx context.Context, id, bundle string, out *os.File) (int, error) {
	spec, err := readSpec(bundle)
	if err != nil {
		return 0, err
	}
	n.mu.Lock()
	if err := n.step("run " + id); err != nil {
		n.mu.Unlock()
		return 0, err
	}
	if n.ctrs[id] != nil || n.records[id] {
		n.mu.Unlock()
		return 0, fmt.Errorf("container with id %s already exists", id)
	}
	if !n.mounted[bundle] {
		n.mu.Unlock()
		return 0, fmt.Errorf("%s: rootfs not mounted", bundle)
	}
	args := spec.Process.Args
	if slices.Contains(args, "fail-run") {
		n.mu.Unlock()
		fmt.Fprintf(out, "exec: %q: no such file or directory\n", args[0])
		return 0, errors.New("exit status 1")
	}
	n.nextPid++
	pid := n.nextPid
	p := &fakeProc{ctr: id, child: true, ignoreTerm: slices.Contains(args, "ignore-term"), done: make(chan struct{})}
	n.procs[pid] = p
	cg := strings.Trim(spec.Linux.CgroupsPath, "/")
	n.ctrs[id] = &fakeCtr{id: id, bundle: bundle, cgroup: cg, pid: pid}
	n.records[id] = true
	for i := range cg { // runc makes the parents too
		if cg[i] == '/' {
			n.cgroups[cg[:i]] = true
		}
	}
	n.cgroups[cg] = true
	for _, a := range args {
		if text, ok := strings.CutPrefix(a, "print:"); ok {
			fmt.Fprintln(out, text)
		}
		if code, ok := strings.CutPrefix(a, "exit:"); ok {
			c, _ := strconv.Atoi(code)
			n.end(pid, c)
		}
	}
	n.mu.Unlock()
	if slices.Contains(args, "hang-run") {
		<-ctx.Done()
		return pid, ctx.Err()
	}
	return pid, nil
}

func readSpec(bundle string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, err
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, err
	}
	if s.Process == nil || s.Linux == nil {
		return nil, errors.New("config.json: no process or linux section")
	}
	return &s, nil
}

func (n *fakeNode) state(c *fakeCtr) ctrState {
	if p := n.procs[c.pid]; p != nil && !p.ended {
		return ctrState{ID: c.id, Status: "running", Pid: c.pid}
	}
	return ctrState{ID: c.id, Status: "stopped"}
}

// State implements containers.
func (n *fakeNode) State(ctx context.Context, id string) (ctrState, error) {
	if err := ctx.Err(); err != nil {
		return ctrState{}, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	c := n.ctrs[id]
	if c == nil {
		return ctrState{}, fmt.Errorf("container %s does not exist", id)
	}
	return n.state(c), nil
}

// List implements containers.
func (n *fakeNode) List(ctx context.Context) ([]ctrState, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []ctrState
	for _, c := range n.ctrs {
		out = append(out, n.state(c))
	}
	return out, nil
}

// Kill implements containers.
func (n *fakeNode) Kill(ctx context.Context, id string, sig syscall.Signal, all bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	c := n.ctrs[id]
	if c == nil {
		return fmt.Errorf("container %s does not exist", id)
	}
	p := n.procs[c.pid]
	if p == nil || p.ended {
		return errors.New("container not running")
	}
	n.signals[id] = append(n.signals[id], sig)
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM && !p.ignoreTerm {
		n.end(c.pid, 128+int(sig))
	}
	return nil
}

// Delete implements containers (runc delete --force).
func (n *fakeNode) Delete(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	c := n.ctrs[id]
	if c == nil {
		return fmt.Errorf("container %s does not exist", id)
	}
	n.end(c.pid, 128+int(syscall.SIGKILL))
	delete(n.cgroups, c.cgroup)
	delete(n.ctrs, id)
	delete(n.records, id)
	return nil
}

// HasRecord implements containers.
func (n *fakeNode) HasRecord(id string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.records[id]
}

// DropRecord implements containers.
func (n *fakeNode) DropRecord(id string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.records, id)
	return nil
}

// Wait implements processes.
func (n *fakeNode) Wait(pid int) (int, error) {
	n.mu.Lock()
	p := n.procs[pid]
	n.mu.Unlock()
	if p == nil {
		return 0, syscall.ECHILD
	}
	<-p.done
	n.mu.Lock()
	defer n.mu.Unlock()
	if !p.child || p.waited {
		return 0, syscall.ECHILD
	}
	p.waited = true
	return p.code, nil
}

// Watch implements processes.
func (n *fakeNode) Watch(ctx context.Context, pid int) bool {
	n.mu.Lock()
	p := n.procs[pid]
	n.mu.Unlock()
	if p == nil {
		return true
	}
	select {
	case <-p.done:
		return true
	case <-ctx.Done():
		return false
	}
}

// Alive implements processes.
func (n *fakeNode) Alive(pid int) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.procs[pid]
	return p != nil && !p.ended
}

// Reap implements processes.
func (n *fakeNode) Reap(pid int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p := n.procs[pid]; p != nil && p.child && p.ended {
		p.waited = true
	}
}

// zombies lists the ended children of the riklet nobody collected.
func (n *fakeNode) zombies() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for pid, p := range n.procs {
		if p.child && p.ended && !p.waited {
			out = append(out, fmt.Sprintf("%d (%s)", pid, p.ctr))
		}
	}
	return out
}

// Setup implements network.
func (n *fakeNode) Setup(ctx context.Context, id string) (podnet.Net, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.step("network " + id); err != nil {
		return podnet.Net{}, err
	}
	if nt, ok := n.nets[id]; ok {
		return nt, nil
	}
	n.nextIP++
	nt := podnet.Net{NetnsPath: "/run/fake/netns/" + id, IP: netip.AddrFrom4([4]byte{10, 63, 0, n.nextIP + 1}), Gateway: netip.MustParseAddr("10.63.0.1")}
	n.nets[id] = nt
	return nt, nil
}

// Get implements network.
func (n *fakeNode) Get(id string) (podnet.Net, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	nt, ok := n.nets[id]
	return nt, ok
}

// Teardown implements network.
func (n *fakeNode) Teardown(ctx context.Context, id string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.nets, id)
	return nil
}

// Owners implements network.
func (n *fakeNode) Owners() ([]string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var ids []string
	for id := range n.nets {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids, nil
}

// Mount implements mounts: the rootfs is an empty directory.
func (n *fakeNode) Mount(bundle string, layers []string) (bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.step("mount " + filepath.Base(bundle)); err != nil {
		return false, err
	}
	if len(layers) == 0 {
		return false, errors.New("no layers")
	}
	if err := os.MkdirAll(filepath.Join(bundle, "rootfs"), 0o755); err != nil {
		return false, err
	}
	n.mounted[bundle] = true
	return true, nil
}

// Unmount implements mounts.
func (n *fakeNode) Unmount(bundle string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.mounted, bundle)
	return nil
}

// live reports whether a running init is in cgroup path or under it.
// Call with n.mu held.
func (n *fakeNode) live(path string) bool {
	for _, c := range n.ctrs {
		if p := n.procs[c.pid]; p != nil && !p.ended && (c.cgroup == path || strings.HasPrefix(c.cgroup, path+"/")) {
			return true
		}
	}
	return false
}

// Remove implements cgroupHost: path and everything under it.
func (n *fakeNode) Remove(path string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.live(path) {
		return fmt.Errorf("removing cgroup %s: %w", path, syscall.EBUSY)
	}
	for cg := range n.cgroups {
		if cg == path || strings.HasPrefix(cg, path+"/") {
			delete(n.cgroups, cg)
		}
	}
	return nil
}

// Children implements cgroupHost: the cgroups right under path (runc
// makes the parents of a container's cgroup too).
func (n *fakeNode) Children(path string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for cg := range n.cgroups {
		if rest, ok := strings.CutPrefix(cg, path+"/"); ok {
			name, _, _ := strings.Cut(rest, "/")
			if !seen[name] {
				seen[name] = true
				out = append(out, name)
			}
		}
	}
	return out
}

// OOMKilled implements cgroupHost.
func (n *fakeNode) OOMKilled(path string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.oom[path]
}

// Expose implements Exposer.
func (n *fakeNode) Expose(ctx context.Context, id string, ip netip.Addr, ports []workload.PortMapping) error {
	n.mu.Lock()
	if err := n.step("expose " + id); err != nil {
		n.mu.Unlock()
		return err
	}
	n.exposed[id] = ports
	hook := n.onExpose
	n.mu.Unlock()
	if hook != nil {
		hook(id)
	}
	return nil
}

// Unexpose implements Exposer.
func (n *fakeNode) Unexpose(ctx context.Context, id string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.exposed, id)
	return nil
}

// leftovers lists what the node still holds of pod id.
func (n *fakeNode) leftovers(id, cgroupDir string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for rid, c := range n.ctrs {
		if strings.HasPrefix(rid, id+"-") {
			out = append(out, "container "+rid)
			if p := n.procs[c.pid]; p != nil && !p.ended {
				out = append(out, "running init of "+rid)
			}
		}
	}
	for rid := range n.records {
		if strings.HasPrefix(rid, id+"-") {
			out = append(out, "runc record "+rid)
		}
	}
	for b := range n.mounted {
		if strings.Contains(b, id) {
			out = append(out, "mount "+b)
		}
	}
	for cg := range n.cgroups {
		if strings.HasPrefix(cg, cgroupDir+"/"+id) {
			out = append(out, "cgroup "+cg)
		}
	}
	if _, ok := n.nets[id]; ok {
		out = append(out, "network")
	}
	if _, ok := n.exposed[id]; ok {
		out = append(out, "exposed ports")
	}
	sort.Strings(out)
	return out
}

// signalsOf returns the signals container rid received.
func (n *fakeNode) signalsOf(rid string) []syscall.Signal {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.signals[rid])
}
