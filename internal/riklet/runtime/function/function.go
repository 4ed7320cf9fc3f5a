// Package function is the riklet runtime for Functions: microVMs booted
// from a configured kernel, an initramfs around rik-init, and a root
// filesystem fetched from the workload's URL, run by a VMM driver (QEMU or
// Firecracker). VMs run detached and survive a riklet restart: each
// instance's state lives in <state>/functions/<id>/ (vm.json, console.log,
// the instance's private rootfs.ext4, VMM sockets).
//
// Each VMM is confined (sandbox.go): it starts in its own cgroup
// (<CgroupDir>/<id>, sized from the VM's vCPUs and memory plus QEMU's
// overhead) and, with QEMU, as a uid and gid of its own from a range, with
// no capability, getting its TAP, disk, console, QMP socket and boot files
// as file descriptors (see package qemu); QEMU's own seccomp sandbox stays
// on. Firecracker runs as root in its cgroup (its jailer is not used yet).
package function

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/atomicfile"
	"github.com/rik-org/rik/internal/riklet/cgroups"
	"github.com/rik-org/rik/internal/riklet/initramfs"
	"github.com/rik-org/rik/internal/riklet/logfile"
	"github.com/rik-org/rik/internal/riklet/rootfs"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/riklet/vmm"
	"github.com/rik-org/rik/internal/workload"
)

// Timing keys of Status.Timings (milliseconds since Start was asked).
const (
	TimingFetched      = "fetched"
	TimingNetworkReady = "network_ready"
	TimingVMMStarted   = "vmm_started"
	TimingGuestRunning = "guest_running"
)

// Runtime runs Functions. It implements runtime.Runtime.
type Runtime struct {
	cfg    Config
	report runtime.Reporter
	log    *slog.Logger
	driver vmm.Driver
	kernel string
	initrd string
	store  *rootfs.Store
	dir    string // <state>/functions

	cgroups      cgroupHost
	unprivileged bool // the driver runs VMMs as the VM's own uid

	ctx    context.Context // cancelled by Close: ends the watchers
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu  sync.Mutex
	vms map[string]*vm
}

var _ runtime.Runtime = (*Runtime)(nil)

// vmState is persisted as vm.json.
type vmState struct {
	ID      string           `json:"id"`
	Name    string           `json:"name"`
	VMM     vmm.Config       `json:"vmm"`
	Process vmm.Process      `json:"process"`
	Net     NetConfig        `json:"net"`
	Timings map[string]int64 `json:"timings"`
}

type vm struct {
	id  string
	dir string

	mu       sync.Mutex  // serialises Start and Stop of this instance
	stopping atomic.Bool // set by Stop: the watcher does not report the exit

	// guarded by Runtime.mu
	uid         uint32 // the VMM's uid (and gid), reserved by allocUID; 0: none
	startCancel context.CancelFunc
	state       vmState
	status      runtime.Status
	watchCancel context.CancelFunc
	watchDone   chan struct{}
}

// New checks the configuration, prepares the kernel (extracting a PVH
// vmlinux when it can) and builds the initramfs. It fails with
// ErrNotConfigured when no kernel is configured or no VMM is found: the node
// then does not advertise Functions.
func New(ctx context.Context, cfg Config, report runtime.Reporter) (*Runtime, error) {
	cfg.setDefaults()
	if cfg.KernelPath == "" {
		return nil, fmt.Errorf("%w: no kernel (--kernel-path)", ErrNotConfigured)
	}
	if _, err := os.Stat(cfg.KernelPath); err != nil {
		return nil, fmt.Errorf("%w: kernel: %w", ErrNotConfigured, err)
	}
	if cfg.StateDir == "" {
		return nil, errors.New("function runtime: StateDir is required")
	}
	if report == nil {
		report = func(runtime.Status) {}
	}
	driver, err := pickDriver(cfg, vmm.KVMUsable() && cfg.QEMUAccel != "tcg", exec.LookPath)
	if err != nil {
		return nil, err
	}
	initBin, err := findInit(cfg.InitBinary)
	if err != nil {
		return nil, err
	}
	bootDir := filepath.Join(cfg.StateDir, "function-boot")
	dir := filepath.Join(cfg.StateDir, "functions")
	for _, d := range []string{bootDir, dir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("creating %s: %w", d, err)
		}
	}
	kernel, pvh, err := vmm.PrepareKernel(ctx, cfg.KernelPath, bootDir)
	if err != nil {
		return nil, err
	}
	if driver.Name() == "firecracker" && !pvh {
		return nil, fmt.Errorf("%w: firecracker needs an ELF vmlinux and %s could not be turned into one", ErrNotConfigured, cfg.KernelPath)
	}
	initrd := filepath.Join(bootDir, "initramfs.cpio.gz")
	mods, err := initramfs.BuildFile(ctx, initrd, initramfs.Options{Init: initBin, ModulesDir: cfg.KernelModulesDir})
	if err != nil {
		return nil, fmt.Errorf("building initramfs: %w", err)
	}
	// Public files (rik-init, modules, a kernel) the unprivileged VMM reads.
	for _, f := range []*string{&kernel, &initrd} {
		if *f, err = readableBy(*f, bootDir); err != nil {
			return nil, fmt.Errorf("preparing boot files: %w", err)
		}
	}
	store, err := rootfs.NewStore(filepath.Join(cfg.StateDir, "rootfs"), cfg.MaxRootfsBytes, cfg.Fetch, cfg.Logger)
	if err != nil {
		return nil, err
	}
	cfg.Logger.Info("function runtime ready", "vmm", driver.Name(), "kernel", kernel, "pvh", pvh, "modules", mods)
	return newRuntime(ctx, cfg, report, driver, kernel, initrd, store, cgroups.Host{}), nil
}

func newRuntime(ctx context.Context, cfg Config, report runtime.Reporter, driver vmm.Driver, kernel, initrd string, store *rootfs.Store, cg cgroupHost) *Runtime {
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	return &Runtime{
		cfg: cfg, report: report, log: cfg.Logger, driver: driver,
		kernel: kernel, initrd: initrd, store: store, dir: filepath.Join(cfg.StateDir, "functions"),
		// Firecracker would need its jailer to run unprivileged.
		cgroups: cg, unprivileged: driver.Name() == "qemu",
		ctx: rctx, cancel: cancel, vms: map[string]*vm{},
	}
}

// VMM returns the name of the driver in use ("qemu" or "firecracker").
func (r *Runtime) VMM() string { return r.driver.Name() }

// Close stops watching VMs and serving their DHCP (they keep running;
// Recover adopts them).
func (r *Runtime) Close() error {
	r.cancel()
	r.wg.Wait()
	if r.cfg.BridgeNetwork != nil {
		r.cfg.BridgeNetwork.Close()
	}
	return nil
}

// Kind implements runtime.Runtime.
func (r *Runtime) Kind() workload.Kind { return workload.KindFunction }

func (r *Runtime) entry(id string) *vm {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := r.vms[id]
	if v == nil {
		v = &vm{id: id, dir: filepath.Join(r.dir, id)}
		r.vms[id] = v
	}
	return v
}

func (r *Runtime) forget(v *vm) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.vms[v.id] == v {
		delete(r.vms, v.id)
	}
}

// Start implements runtime.Runtime.
func (r *Runtime) Start(ctx context.Context, inst runtime.Instance) (runtime.Status, error) {
	if err := validateFunction(workloadInstance{ID: inst.ID, Function: inst.Workload.Spec.Function}); err != nil {
		return runtime.Status{InstanceID: inst.ID, Phase: runtime.PhaseFailed, Reason: api.ReasonInvalidSpec, Message: err.Error()}, err
	}
	v := r.entry(inst.ID)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	v.mu.Lock()
	defer v.mu.Unlock()
	r.mu.Lock()
	r.vms[inst.ID] = v // a Stop may have dropped it while we waited
	if v.status.Phase == runtime.PhaseRunning && vmm.Alive(v.state.Process) {
		st := v.status
		r.mu.Unlock()
		return st, nil
	}
	v.startCancel = cancel
	r.mu.Unlock()
	// Leftovers of an earlier run (exited VM): clean before starting again.
	if err := r.cleanup(ctx, v); err != nil {
		r.mu.Lock()
		v.startCancel = nil
		r.mu.Unlock()
		return runtime.Status{InstanceID: inst.ID, Phase: runtime.PhaseFailed, Reason: api.ReasonCleanupFailed, Message: err.Error()}, err
	}
	v.stopping.Store(false)
	st, err := r.start(sctx, v, inst)
	r.mu.Lock()
	v.startCancel = nil
	r.mu.Unlock()
	if err != nil {
		if cerr := r.cleanup(context.WithoutCancel(ctx), v); cerr != nil {
			r.log.Error("rolling back function start", "instance", inst.ID, "err", cerr)
		}
		r.forget(v)
		return st, err
	}
	return st, nil
}

func (r *Runtime) start(ctx context.Context, v *vm, inst runtime.Instance) (runtime.Status, error) {
	fn := inst.Workload.Spec.Function
	t0 := time.Now()
	timings := map[string]int64{}
	mark := func(k string) { timings[k] = time.Since(t0).Milliseconds() }
	failed := func(reason string, err error) (runtime.Status, error) {
		return runtime.Status{InstanceID: inst.ID, Phase: runtime.PhaseFailed, Reason: reason, Message: err.Error(), Timings: maps.Clone(timings)}, err
	}
	progress := func(msg string) {
		r.report(runtime.Status{InstanceID: inst.ID, Phase: runtime.PhaseCreating, Message: msg, Timings: maps.Clone(timings)})
	}

	disk, reason, err := r.prepareDisk(ctx, v, inst, progress, mark)
	if err != nil {
		return failed(reason, err)
	}
	nc, err := r.setupNetwork(ctx, inst, progress)
	if err != nil {
		return failed(api.ReasonNetworkFailed, err)
	}
	mark(TimingNetworkReady)

	uid, cgroup, err := r.sandbox(v, fn.Execution)
	if err != nil {
		return failed(api.ReasonVMMFailed, fmt.Errorf("starting vm %s: %w", inst.ID, err))
	}
	initrd, err := initrdFor(r.initrd, v.dir, uid, *fn)
	if err != nil {
		return failed(api.ReasonVMMFailed, fmt.Errorf("starting vm %s: %w", inst.ID, err))
	}
	bootName, bootNC, bootDNS := bootNet(inst.Name, nc, r.cfg.DNS)
	netns, tapNetns := vmmNetns(nc)
	vc := vmm.Config{
		ID: inst.ID, Dir: v.dir, Kernel: r.kernel, Initrd: initrd,
		Cmdline:  kernelCmdline(bootName, *fn, bootNC, bootDNS, r.driver.Name() == "firecracker"),
		RootDisk: disk, Tap: nc.Tap, MAC: nc.MAC,
		VCPUs: fn.Execution.VCPUs, MemoryMiB: fn.Execution.Memory,
		ConsoleLog: filepath.Join(v.dir, "console.log"), Netns: netns, TapNetns: tapNetns,
		UID: uid, GID: uid, Cgroup: cgroup,
	}
	state := vmState{ID: inst.ID, Name: inst.Name, VMM: vc, Net: nc, Timings: timings}
	r.setState(v, state)
	if err := writeState(v.dir, state); err != nil {
		return failed(api.ReasonError, err)
	}
	progress("starting " + r.driver.Name())
	proc, err := r.driver.Start(ctx, vc)
	if err != nil {
		return failed(api.ReasonVMMFailed, fmt.Errorf("starting vm %s: %w", inst.ID, err))
	}
	mark(TimingVMMStarted)
	state.Process = proc
	r.setState(v, state)
	if err := writeState(v.dir, state); err != nil {
		return failed(api.ReasonError, err)
	}
	progress("booting")
	if err := waitGuest(ctx, vc.ConsoleLog, func() bool { return vmm.Alive(proc) }, r.cfg.BootTimeout); err != nil {
		return failed(api.ReasonBootFailed, fmt.Errorf("booting vm %s: %w", inst.ID, err))
	}
	mark(TimingGuestRunning)
	state.Timings = timings
	if err := writeState(v.dir, state); err != nil {
		return failed(api.ReasonError, err)
	}
	st := runningStatus(state)
	r.mu.Lock()
	v.state, v.status = state, st
	r.mu.Unlock()
	r.watch(v, proc)
	r.log.Info("function started", "instance", inst.ID, "ip", nc.GuestIP, "timings", timings)
	return st, nil
}

// prepareDisk fetches the rootfs of inst and clones it into v's
// directory; it returns the disk's path, or the reason it failed.
func (r *Runtime) prepareDisk(ctx context.Context, v *vm, inst runtime.Instance, progress func(string), mark func(string)) (string, string, error) {
	ex := inst.Workload.Spec.Function.Execution
	progress("fetching rootfs " + ex.Rootfs)
	img, err := r.store.Fetch(ctx, ex.Rootfs, ex.SHA256, progress)
	if err != nil {
		return "", api.ReasonRootfsFailed, fmt.Errorf("fetching rootfs for %s: %w", inst.ID, err)
	}
	mark(TimingFetched)
	if err := os.MkdirAll(v.dir, 0o700); err != nil {
		return "", api.ReasonError, fmt.Errorf("creating %s: %w", v.dir, err)
	}
	disk := filepath.Join(v.dir, "rootfs.ext4")
	if err := rootfs.Clone(ctx, img, disk); err != nil {
		return "", api.ReasonRootfsFailed, err
	}
	return disk, "", nil
}

// setupNetwork gives inst its network (none without a Network) and its MAC.
func (r *Runtime) setupNetwork(ctx context.Context, inst runtime.Instance, progress func(string)) (NetConfig, error) {
	fn := inst.Workload.Spec.Function
	if r.networkMode(fn) == workload.NetworkBridge {
		progress("setting up bridge network")
		return r.setupBridge(ctx, inst.ID, inst.Name, exposedPorts(fn.Exposure))
	}
	var nc NetConfig
	if r.cfg.Network != nil {
		progress("setting up network")
		var err error
		nc, err = r.cfg.Network.Setup(ctx, inst.ID, exposedPorts(inst.Workload.Spec.Function.Exposure))
		if err != nil {
			return NetConfig{}, fmt.Errorf("setting up network of %s: %w", inst.ID, err)
		}
	}
	if nc.MAC == nil {
		nc.MAC = macFor(inst.ID)
	}
	return nc, nil
}

// exposedPorts are the ports of exposure published on the node.
func exposedPorts(exposure workload.PortList) []workload.PortMapping {
	var ports []workload.PortMapping
	for _, p := range exposure {
		if p.Port != 0 {
			ports = append(ports, workload.PortMapping{Port: p.Port, TargetPort: p.TargetPort, Protocol: p.Protocol})
		}
	}
	return ports
}

func runningStatus(s vmState) runtime.Status {
	st := runtime.Status{InstanceID: s.ID, Phase: runtime.PhaseRunning, Ports: s.Net.Ports, Timings: s.Timings, Message: "guest running"}
	if s.Net.GuestIP.IsValid() {
		st.IP = s.Net.GuestIP.String()
	}
	return st
}

func (r *Runtime) setState(v *vm, s vmState) {
	r.mu.Lock()
	v.state = s
	r.mu.Unlock()
}

// waitGuest waits for rik-init to start the guest's entrypoint, while
// alive reports that the VM runs.
func waitGuest(ctx context.Context, console string, alive func() bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		// Liveness first: a guest that started then ended before the
		// check has written its marker by then, and counts as started (its
		// end is the watcher's to report).
		running := alive()
		b, _ := os.ReadFile(console)
		if strings.Contains(string(b), markerStarted) {
			return nil
		}
		if strings.Contains(string(b), markerExit) {
			// rik-init gave up before the entrypoint; the VM may not end by
			// itself (a Firecracker guest cannot power off).
			return fmt.Errorf("guest init failed: %s", strings.TrimSpace(string(logfile.TailLines(b, 5))))
		}
		if !running {
			return fmt.Errorf("vm exited during boot: %s", strings.TrimSpace(string(logfile.TailLines(b, 5))))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("guest init not started after %s: %s", timeout, strings.TrimSpace(string(logfile.TailLines(b, 5))))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// watch follows a running VM: it rotates its console log and reports its
// exit (unless Stop caused it).
func (r *Runtime) watch(v *vm, p vmm.Process) {
	ctx, cancel := context.WithCancel(r.ctx)
	done := make(chan struct{})
	r.mu.Lock()
	v.watchCancel, v.watchDone = cancel, done
	r.mu.Unlock()
	console := filepath.Join(v.dir, "console.log")
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(done)
		exited := make(chan error, 1)
		go func() { exited <- vmm.Watch(ctx, p) }()
		tick := time.NewTicker(2 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				if err := logfile.Rotate(console, r.cfg.ConsoleMaxBytes); err != nil {
					r.log.Warn("rotating console log", "instance", v.id, "err", err)
				}
			case err := <-exited:
				if err != nil || v.stopping.Load() {
					return
				}
				st := exitStatus(v.id, console)
				if st.Phase == runtime.PhaseFailed && r.cgroups.OOMKilled(r.cgroupPath(v.id)) {
					st.Reason = api.ReasonOOMKilled
					st.Message = "the vmm used more than its memory limit: " + st.Message
				}
				r.mu.Lock()
				v.status = st
				r.mu.Unlock()
				r.log.Info("function exited", "instance", v.id, "phase", st.Phase, "reason", st.Reason)
				r.report(st)
				return
			}
		}
	}()
}

// exitStatus reads the guest's exit code from its console (and the rotated
// part: the watcher may have rotated the exit line away just before).
func exitStatus(id, console string) runtime.Status {
	var buf bytes.Buffer
	_, _ = logfile.Tail(console, 0, &buf)
	b := buf.Bytes()
	if code, ok := guestExitCode(b); ok {
		reason := api.ReasonCompleted
		if code != 0 {
			reason = api.ReasonError
		}
		return runtime.Status{InstanceID: id, Phase: runtime.PhaseExited, ExitCode: &code, Reason: reason,
			Message: fmt.Sprintf("guest exited with code %d", code)}
	}
	return runtime.Status{InstanceID: id, Phase: runtime.PhaseFailed, Reason: api.ReasonVMCrashed,
		Message: "vm exited without a guest exit code: " + strings.TrimSpace(string(logfile.TailLines(b, 3)))}
}

// Stop implements runtime.Runtime.
func (r *Runtime) Stop(ctx context.Context, inst runtime.Instance) error {
	if workload.ValidInstanceID(inst.ID) != nil {
		return nil // cannot name anything of ours
	}
	v := r.entry(inst.ID)
	v.stopping.Store(true)
	r.mu.Lock()
	if v.startCancel != nil {
		v.startCancel()
	}
	r.mu.Unlock()
	v.mu.Lock()
	defer v.mu.Unlock()
	err := r.cleanup(ctx, v)
	r.forget(v)
	return err
}

// cleanup stops the VM (graceful, then forced) and removes every resource
// of v: watcher, process, network, files. It is idempotent.
func (r *Runtime) cleanup(ctx context.Context, v *vm) error {
	r.mu.Lock()
	wc, wd := v.watchCancel, v.watchDone
	v.watchCancel, v.watchDone = nil, nil
	state := v.state
	r.mu.Unlock()
	if wc != nil {
		wc()
		<-wd
	}
	if state.Process.Pid == 0 {
		if s, err := readState(v.dir); err == nil && s.ID == v.id {
			state = s
		}
	}
	var errs []error
	if err := r.kill(ctx, state); err != nil {
		// The VM may still run: its TAP, address lease and files stay
		// until it is stopped (the caller retries).
		return err
	}
	if err := r.removeCgroup(v.id); err != nil {
		errs = append(errs, err)
	}
	if r.cfg.Network != nil {
		if err := r.cfg.Network.Teardown(ctx, v.id); err != nil {
			errs = append(errs, fmt.Errorf("tearing down network of %s: %w", v.id, err))
		}
	}
	if err := r.teardownBridge(ctx, v.id); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(v.dir); err != nil {
		errs = append(errs, fmt.Errorf("removing %s: %w", v.dir, err))
	}
	r.mu.Lock()
	v.state, v.status, v.uid = vmState{}, runtime.Status{}, 0
	r.mu.Unlock()
	return errors.Join(errs...)
}

// kill stops the VM process of s: the driver's graceful shutdown, then
// SIGTERM, then SIGKILL.
func (r *Runtime) kill(ctx context.Context, s vmState) error {
	p := s.Process
	if !vmm.Alive(p) || !vmm.CmdlineContains(p.Pid, s.ID) {
		return nil
	}
	if p.Driver == r.driver.Name() {
		t0 := time.Now()
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := r.driver.Shutdown(sctx, s.VMM, p)
		cancel()
		if err == nil && vmm.WaitGone(ctx, p, r.cfg.StopGrace) {
			r.log.Info("vm stopped gracefully", "instance", s.ID, "after", time.Since(t0).Round(time.Millisecond))
			return nil
		}
		r.log.Warn("vm did not stop gracefully", "instance", s.ID, "err", err)
	}
	if err := vmm.Signal(p, syscall.SIGTERM); errors.Is(err, vmm.ErrNoProcess) {
		return nil
	}
	if vmm.WaitGone(ctx, p, 3*time.Second) {
		return nil
	}
	if err := vmm.Signal(p, syscall.SIGKILL); errors.Is(err, vmm.ErrNoProcess) {
		return nil
	}
	if vmm.WaitGone(context.WithoutCancel(ctx), p, 5*time.Second) {
		return nil
	}
	return fmt.Errorf("vm %s (pid %d) did not exit after SIGKILL", s.ID, p.Pid)
}

// Recover implements runtime.Runtime.
func (r *Runtime) Recover(ctx context.Context, owned []runtime.Instance) ([]runtime.Status, error) {
	want := map[string]bool{}
	ids := make([]string, 0, len(owned))
	for _, o := range owned {
		want[o.ID] = true
		ids = append(ids, o.ID)
	}
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", r.dir, err)
	}
	var errs []error
	found := map[string]runtime.Status{}
	for _, e := range entries {
		id := e.Name()
		if !e.IsDir() || workload.ValidInstanceID(id) != nil || !want[id] {
			r.log.Info("removing unowned function", "instance", id)
			v := &vm{id: id, dir: filepath.Join(r.dir, id)}
			v.stopping.Store(true)
			if err := r.cleanup(ctx, v); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		st, err := r.recoverVM(ctx, id)
		if err != nil {
			errs = append(errs, err)
		}
		found[id] = st
	}
	errs = append(errs, r.removeStrays(ctx)...)
	var out []runtime.Status
	for _, o := range owned {
		st, ok := found[o.ID]
		if !ok {
			st = runtime.Status{InstanceID: o.ID, Phase: runtime.PhaseFailed, Reason: api.ReasonLost, Message: "no vm found on this node"}
		}
		out = append(out, st)
	}
	if r.cfg.Network != nil {
		if err := r.cfg.Network.Reconcile(ctx, ids); err != nil {
			errs = append(errs, fmt.Errorf("reconciling function network: %w", err))
		}
	}
	if r.cfg.BridgeNetwork != nil {
		if err := r.cfg.BridgeNetwork.Reconcile(ctx, ids); err != nil {
			errs = append(errs, fmt.Errorf("reconciling function bridge network: %w", err))
		}
	}
	return out, errors.Join(errs...)
}

// recoverVM adopts owned VM id if its guest runs, kills it if its start was
// interrupted, and otherwise reports how it ended (Stop or Start then
// cleans up). An error is one of killing it.
func (r *Runtime) recoverVM(ctx context.Context, id string) (runtime.Status, error) {
	r.mu.Lock()
	cur := r.vms[id]
	var curProc vmm.Process
	var curStatus runtime.Status
	watched := cur != nil && cur.watchDone != nil
	if watched {
		curProc, curStatus = cur.state.Process, cur.status
	}
	r.mu.Unlock()
	if watched && vmm.Alive(curProc) {
		return curStatus, nil // already watched (Recover called twice)
	}
	v := &vm{id: id, dir: filepath.Join(r.dir, id)}
	s, err := readState(v.dir)
	alive := err == nil && s.ID == id && vmm.Alive(s.Process) && vmm.CmdlineContains(s.Process.Pid, id)
	_, booted := s.Timings[TimingGuestRunning]
	var st runtime.Status
	switch {
	case alive && !booted:
		// The riklet stopped during this VM's Start: its guest was never
		// seen running. Not adopted: it ends as a failed start.
		r.log.Info("killing function whose start was interrupted", "instance", id, "pid", s.Process.Pid)
		err = r.kill(ctx, s)
		st = runtime.Status{InstanceID: id, Phase: runtime.PhaseFailed, Reason: api.ReasonStartInterrupted,
			Message: "the riklet stopped while this vm was starting"}
	case alive:
		st, err = r.adoptVM(ctx, s)
		v.uid = s.VMM.UID
	default:
		st, err = exitStatus(id, filepath.Join(v.dir, "console.log")), nil
	}
	r.mu.Lock()
	v.state, v.status = s, st
	r.vms[id] = v
	r.mu.Unlock()
	if st.Phase == runtime.PhaseRunning {
		r.watch(v, s.Process)
		r.log.Info("adopted function", "instance", id, "pid", s.Process.Pid)
	}
	return st, err
}

// removeStrays kills the VMM processes no adopted VM owns, and removes
// the cgroups of VMs not adopted. A stray is found by the state path in its
// argv (its directory is gone: removed by hand, or a crash between start
// and vm.json), or by its cgroup.
func (r *Runtime) removeStrays(ctx context.Context) []error {
	var errs []error
	for pid, id := range strayVMs(r.dir) {
		r.mu.Lock()
		v := r.vms[id]
		adopted := v != nil && v.state.Process.Pid == pid
		r.mu.Unlock()
		if adopted {
			continue
		}
		st, err := vmm.StartTime(pid)
		if err != nil {
			continue
		}
		r.log.Info("killing stray vmm process", "instance", id, "pid", pid)
		if err := r.kill(ctx, vmState{ID: id, Process: vmm.Process{Pid: pid, StartTime: st}}); err != nil {
			errs = append(errs, err)
		}
	}
	for _, id := range r.cgroups.Children(r.cfg.CgroupDir) {
		r.mu.Lock()
		v := r.vms[id]
		watched := v != nil && v.watchDone != nil
		r.mu.Unlock()
		if !watched {
			if err := r.removeCgroup(id); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errs
}

// Logs implements runtime.Runtime: the guest's console.
func (r *Runtime) Logs(ctx context.Context, inst runtime.Instance, opts runtime.LogOptions, w io.Writer) error {
	if workload.ValidInstanceID(inst.ID) != nil {
		return runtime.ErrNotFound
	}
	path := filepath.Join(r.dir, inst.ID, "console.log")
	off, err := logfile.Tail(path, opts.Tail, w)
	if errors.Is(err, os.ErrNotExist) {
		return runtime.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("reading console of %s: %w", inst.ID, err)
	}
	if !opts.Follow {
		return nil
	}
	return logfile.Follow(ctx, path, off, w, func() bool { return r.running(inst.ID) })
}

// running reports whether VM id runs, or is being started.
func (r *Runtime) running(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := r.vms[id]
	return v != nil && (v.startCancel != nil || v.status.Phase == runtime.PhaseRunning && vmm.Alive(v.state.Process))
}

func writeState(dir string, s vmState) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding vm state: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, "vm.json"), b, 0o600); err != nil {
		return fmt.Errorf("writing vm state: %w", err)
	}
	return nil
}

func readState(dir string) (vmState, error) {
	var s vmState
	b, err := os.ReadFile(filepath.Join(dir, "vm.json"))
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("decoding %s/vm.json: %w", dir, err)
	}
	return s, nil
}

// strayVMs finds processes whose command line names a path under dir (every
// VMM we start does: its disk, console or sockets) and that lead their own
// session (every VMM we start does; a "tail -f .../console.log" typed in a
// shell does not, and is left alone), and returns pid -> id.
func strayVMs(dir string) map[int]string {
	out := map[int]string{}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	prefix := filepath.Clean(dir) + "/"
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + p.Name() + "/cmdline")
		if err != nil {
			continue
		}
		cmdline := strings.ReplaceAll(string(b), "\x00", " ")
		i := strings.Index(cmdline, prefix)
		if i < 0 {
			continue
		}
		id, _, _ := strings.Cut(cmdline[i+len(prefix):], "/")
		if workload.ValidInstanceID(id) == nil && vmm.SessionLeader(pid) {
			out[pid] = id
		}
	}
	return out
}
