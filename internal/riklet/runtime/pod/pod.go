// Package pod runs Pods (one or more OCI containers sharing a network
// namespace) with runc, through go-runc.
//
// Each container is started with `runc run --detach`, writing straight into
// its log file. The riklet is a child subreaper (set by New), so when runc
// exits the container's init is re-parented to the riklet, which waits for
// it and reports its exit code (128+signal when killed); no runc process
// stays behind per container. If the riklet restarts, the containers go on
// running (re-parented to init); Recover adopts them and watches their init
// through a pidfd. Such an adopted container's exit code cannot be known,
// so its exit is reported with ExitCode nil and Reason "Unknown".
//
// The runtime only reports exits (runtime.PhaseExited); restart policy and
// backoff belong to the agent, which calls Stop then Start. iptables belong
// to the sdn package (see Exposer).
//
// Layout under Config.StateDir:
//
//	images/              the image store (package image)
//	runc/                runc's state (--root)
//	net/                 pod network namespaces and address leases (package podnet)
//	pods/<id>/pod.json   what the pod is made of (for Stop and Recover)
//	pods/<id>/<ctr>/     each container's bundle: config.json, rootfs (overlay), upper, work
//	logs/<id>/<ctr>.log  each container's stdout and stderr (+ .log.1, rotated by size)
package pod

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/atomicfile"
	"github.com/rik-org/rik/internal/keylock"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	runc "github.com/containerd/go-runc"
	"github.com/rik-org/rik/internal/riklet/cgroups"
	"github.com/rik-org/rik/internal/riklet/image"
	"github.com/rik-org/rik/internal/riklet/podnet"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/workload"
	"golang.org/x/sys/unix"
)

// Exposer publishes a pod's ports on the node (the sdn package). Expose is
// called once the pod's network is up, Unexpose when it stops.
type Exposer interface {
	Expose(ctx context.Context, id string, ip netip.Addr, ports []workload.PortMapping) error
	Unexpose(ctx context.Context, id string) error
}

// Config configures a Runtime.
type Config struct {
	StateDir   string        // required
	RuncBinary string        // default "runc"
	RuncRoot   string        // default <StateDir>/runc
	PodCIDR    netip.Prefix  // default 10.63.0.0/16
	Bridge     string        // default rik0
	HostNetns  string        // netns holding the bridge; "" = the riklet's (tests use another)
	StopGrace  time.Duration // SIGTERM to SIGKILL; default 10s
	CgroupDir  string        // parent cgroup of pods; default "rik/pods"
	PidsLimit  int64         // per container; default 4096
	LogMaxSize int64         // rotate a container log above this; default 10 MiB
	StartWait  time.Duration // how long a container may take to start; default 60s
	Images     *image.Store  // default: an image.Store in <StateDir>/images with ImageOptions
	ImageOpts  image.Options // used when Images is nil
	Exposer    Exposer       // nil: ports are not exposed
	Logger     *slog.Logger

	// AllowPrivileged lets containers be privileged or add capabilities
	// outside Docker's default set; refused (reason PrivilegedNotAllowed)
	// otherwise.
	AllowPrivileged bool
}

func (cfg *Config) setDefaults() {
	if cfg.RuncRoot == "" {
		cfg.RuncRoot = filepath.Join(cfg.StateDir, "runc")
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = 10 * time.Second
	}
	cfg.CgroupDir = strings.Trim(cfg.CgroupDir, "/")
	if cfg.CgroupDir == "" {
		cfg.CgroupDir = "rik/pods"
	}
	if cfg.PidsLimit == 0 {
		cfg.PidsLimit = 4096
	}
	if cfg.LogMaxSize <= 0 {
		cfg.LogMaxSize = 10 << 20
	}
	if cfg.StartWait <= 0 {
		cfg.StartWait = 60 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
}

// Runtime runs pods. It is safe for concurrent use.
type Runtime struct {
	cfg    Config
	log    *slog.Logger
	report runtime.Reporter
	runc   *runc.Runc
	images *image.Store
	net    *podnet.Manager

	mu    sync.Mutex
	pods  map[string]*pod
	locks keylock.Locker

	noSeccomp bool     // benchmarks only: containers without a seccomp filter
	hostCaps  []string // the riklet's bounding set

	bg     context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed bool // guarded by mu: no more reports
}

var _ runtime.Runtime = (*Runtime)(nil)

// pod is a started pod.
type pod struct {
	ID         string                 `json:"id"`
	Name       string                 `json:"name"`
	IP         string                 `json:"ip,omitempty"`
	Ports      []workload.PortMapping `json:"ports,omitempty"`
	Containers []*container           `json:"containers"`
	Started    time.Time              `json:"started"`

	stopping bool          // guarded by Runtime.mu
	exited   bool          // an exit was reported; guarded by Runtime.mu
	ready    chan struct{} // closed when Start returns: exits are reported after
}

type container struct {
	Name   string `json:"name"`
	RuncID string `json:"runcID"`

	done chan struct{} // closed when the container's process ended; nil until started
	code *int          // its exit code, when known (set before done closes)
	pid  int           // its init, when `runc run` failed after starting it (reaped by stopContainer)
}

// New returns a pod runtime. It fails when runc cannot be found or the
// state directory cannot be made; the riklet then does not offer pods.
// Reporter receives progress while starting and exits.
func New(ctx context.Context, cfg Config, report runtime.Reporter) (*Runtime, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("pod runtime: state dir required")
	}
	if cfg.RuncBinary == "" {
		cfg.RuncBinary = "runc"
	}
	bin, err := exec.LookPath(cfg.RuncBinary)
	if err != nil {
		return nil, fmt.Errorf("pod runtime: runc not found: %w", err)
	}
	cfg.RuncBinary = bin
	cfg.setDefaults()
	if report == nil {
		report = func(runtime.Status) {}
	}
	for _, d := range []string{cfg.StateDir, cfg.RuncRoot, filepath.Join(cfg.StateDir, "pods"), filepath.Join(cfg.StateDir, "logs")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("pod runtime: %w", err)
		}
	}
	images := cfg.Images
	if images == nil {
		opts := cfg.ImageOpts
		if opts.Logger == nil {
			opts.Logger = cfg.Logger
		}
		images, err = image.Open(filepath.Join(cfg.StateDir, "images"), opts)
		if err != nil {
			return nil, fmt.Errorf("pod runtime: %w", err)
		}
	}
	nm, err := podnet.New(podnet.Config{
		StateDir:  filepath.Join(cfg.StateDir, "net"),
		CIDR:      cfg.PodCIDR,
		Bridge:    cfg.Bridge,
		HostNetns: cfg.HostNetns,
		Logger:    cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("pod runtime: %w", err)
	}
	hostCaps, err := boundingCaps()
	if err != nil {
		return nil, fmt.Errorf("pod runtime: %w", err)
	}
	// Container inits are re-parented to the riklet when their `runc run
	// --detach` exits, so the riklet can wait for them and read exit codes.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		cfg.Logger.Warn("cannot become child subreaper: exit codes of containers will be unknown", "err", err)
	}
	r := &Runtime{
		cfg:    cfg,
		log:    cfg.Logger,
		report: report,
		runc:   &runc.Runc{Command: bin, Root: cfg.RuncRoot, Setpgid: true},
		images: images,
		net:    nm,
		pods:   map[string]*pod{},

		hostCaps: hostCaps,
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.bg, r.cancel = bg, cancel
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.rotateLoop(bg)
	}()
	return r, nil
}

// Close stops the runtime's own goroutines. Containers keep running; a new
// Runtime on the same state directory adopts them with Recover.
func (r *Runtime) Close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
	return nil
}

// Kind is workload.KindPod.
func (r *Runtime) Kind() workload.Kind { return workload.KindPod }

// Images is the runtime's image store.
func (r *Runtime) Images() *image.Store { return r.images }

func (r *Runtime) podDir(id string) string { return filepath.Join(r.cfg.StateDir, "pods", id) }
func (r *Runtime) logDir(id string) string { return filepath.Join(r.cfg.StateDir, "logs", id) }

// runcID names a container in runc: <instance id>-<container name>.
func runcID(id, name string) string { return id + "-" + name }

// namePattern is what runc accepts in a container id, starting with an
// alphanumeric (so never "." or "..").
var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

func validID(id string) error {
	if len(id) > 128 || !namePattern.MatchString(id) {
		return fmt.Errorf("instance id %q: invalid", id)
	}
	return nil
}

func validate(inst runtime.Instance) error {
	if err := validID(inst.ID); err != nil {
		return err
	}
	cs := inst.Workload.Spec.Containers
	if len(cs) == 0 {
		return errors.New("spec.containers: required")
	}
	seen := map[string]bool{}
	for i, c := range cs {
		if len(c.Name) > 63 || !namePattern.MatchString(c.Name) {
			return fmt.Errorf("spec.containers[%d].name: invalid %q", i, c.Name)
		}
		if seen[c.Name] {
			return fmt.Errorf("spec.containers[%d].name: duplicate %q", i, c.Name)
		}
		seen[c.Name] = true
		if c.Image == "" {
			return fmt.Errorf("spec.containers[%d].image: required", i)
		}
	}
	return nil
}

// ErrPrivilegeNotAllowed: a container asks for more privilege than the
// node allows (Config.AllowPrivileged).
var ErrPrivilegeNotAllowed = errors.New("not allowed on this node (the riklet runs without --allow-privileged)")

// checkPrivilege refuses a pod asking for privilege the node does not give.
func (r *Runtime) checkPrivilege(inst runtime.Instance) error {
	if r.cfg.AllowPrivileged {
		return nil
	}
	for i, c := range inst.Workload.Spec.Containers {
		if field := c.NeedsPrivilege(i); field != "" {
			return fmt.Errorf("%s: %w", field, ErrPrivilegeNotAllowed)
		}
	}
	return nil
}

func (p *pod) status() runtime.Status {
	return runtime.Status{InstanceID: p.ID, Phase: runtime.PhaseRunning, IP: p.IP, Ports: p.Ports}
}

// Start pulls the images, sets up the pod network and starts every
// container. It returns once all run; on error it removes all it made.
func (r *Runtime) Start(ctx context.Context, inst runtime.Instance) (runtime.Status, error) {
	if err := validate(inst); err != nil {
		return failed(inst.ID, api.ReasonInvalidSpec, err), err
	}
	if err := r.checkPrivilege(inst); err != nil {
		return failed(inst.ID, api.ReasonPrivilegedRefused, err), err
	}
	unlock := r.locks.Lock(inst.ID)
	defer unlock()

	r.mu.Lock()
	if p, ok := r.pods[inst.ID]; ok && !p.exited {
		r.mu.Unlock()
		return p.status(), nil
	}
	r.mu.Unlock()

	began := time.Now()
	timings := map[string]int64{}
	mark := func(phase string) { timings[phase] = time.Since(began).Milliseconds() }
	progress := func(msg string) {
		r.report(runtime.Status{InstanceID: inst.ID, Phase: runtime.PhaseCreating, Message: msg})
	}

	// A pod that exited (or half-made leftovers) is cleaned first.
	if _, err := os.Stat(r.podDir(inst.ID)); err == nil {
		if err := r.cleanup(ctx, inst.ID, inst.Workload.Spec.Containers); err != nil {
			return failed(inst.ID, api.ReasonCleanupFailed, err), err
		}
	}

	// Images first: nothing to roll back if a pull fails.
	imgs := make([]image.Image, len(inst.Workload.Spec.Containers))
	for i, c := range inst.Workload.Spec.Containers {
		img, err := r.images.Pull(ctx, c.Image, progress)
		if err != nil {
			reason := api.ReasonImagePullFailed
			if errors.Is(err, image.ErrBadReference) {
				reason = api.ReasonInvalidImageName
			}
			err = fmt.Errorf("spec.containers[%d].image: %w", i, err)
			return failed(inst.ID, reason, err), err
		}
		imgs[i] = img
	}
	mark("pulled")

	p := &pod{ID: inst.ID, Name: inst.Name, Started: time.Now(), ready: make(chan struct{})}
	// Exits are reported only once Start has decided (and rolled back).
	defer close(p.ready)
	if err := r.start(ctx, p, inst, imgs, mark); err != nil {
		r.log.Warn("starting pod failed, rolling back", "id", inst.ID, "err", err)
		if cerr := r.cleanup(context.WithoutCancel(ctx), inst.ID, inst.Workload.Spec.Containers); cerr != nil {
			r.log.Error("rolling back pod", "id", inst.ID, "err", cerr)
		}
		return failed(inst.ID, api.ReasonStartFailed, err), err
	}
	mark("running")
	st := p.status()
	st.Timings = timings
	st.Message = fmt.Sprintf("%d/%d containers running", len(p.Containers), len(p.Containers))
	return st, nil
}

func failed(id, reason string, err error) runtime.Status {
	return runtime.Status{InstanceID: id, Phase: runtime.PhaseFailed, Reason: reason, Message: err.Error()}
}

func (r *Runtime) start(ctx context.Context, p *pod, inst runtime.Instance, imgs []image.Image, mark func(string)) error {
	id := inst.ID
	dir := r.podDir(id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	for _, c := range inst.Workload.Spec.Containers {
		p.Containers = append(p.Containers, &container{Name: c.Name, RuncID: runcID(id, c.Name)})
	}
	// Record the pod before making anything, so Stop and Recover find all.
	if err := r.save(p); err != nil {
		return err
	}
	n, err := r.net.Setup(ctx, id)
	if err != nil {
		return fmt.Errorf("setting up pod network: %w", err)
	}
	p.IP = n.IP.String()
	mark("network")
	hosts, resolv, err := writeNetFiles(dir, inst.Name, n.IP)
	if err != nil {
		return err
	}
	if err := r.save(p); err != nil {
		return err
	}
	if err := os.MkdirAll(r.logDir(id), 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", r.logDir(id), err)
	}

	r.mu.Lock()
	r.pods[id] = p
	r.mu.Unlock()

	for i, c := range inst.Workload.Spec.Containers {
		ctr := p.Containers[i]
		bundle := filepath.Join(dir, c.Name)
		if err := r.prepareBundle(bundle, specInput{
			Image:      imgs[i].Config,
			Container:  c,
			Index:      i,
			Rootfs:     "rootfs",
			Hostname:   hostname(inst),
			NetnsPath:  n.NetnsPath,
			CgroupPath: "/" + r.cfg.CgroupDir + "/" + id + "/" + c.Name,
			PidsLimit:  r.cfg.PidsLimit,
			HostsFile:  hosts,
			ResolvFile: resolv,
		}, imgs[i].Layers); err != nil {
			return err
		}
		if err := r.run(ctx, p, ctr, bundle); err != nil {
			return fmt.Errorf("starting container %s: %w", c.Name, err)
		}
	}
	mark("containers")

	var ports []workload.PortMapping
	for _, c := range inst.Workload.Spec.Containers {
		for _, pt := range c.Ports {
			if pt.Port != 0 {
				target := pt.TargetPort
				if target == 0 {
					target = pt.Port
				}
				ports = append(ports, workload.PortMapping{Port: pt.Port, TargetPort: target, Protocol: pt.Protocol})
			}
		}
	}
	if len(ports) > 0 && r.cfg.Exposer != nil {
		p.Ports = ports // set first: a rollback unexposes what was half done
		// Recorded before exposing: a Stop after a crash here unexposes them too.
		if err := r.save(p); err != nil {
			return err
		}
		if err := r.cfg.Exposer.Expose(ctx, id, n.IP, ports); err != nil {
			return fmt.Errorf("exposing ports: %w", err)
		}
	}
	if err := r.save(p); err != nil {
		return err
	}
	r.log.Info("pod running", "id", id, "name", inst.Name, "ip", p.IP)
	return nil
}

func hostname(inst runtime.Instance) string {
	h := inst.Name
	if h == "" {
		h = inst.ID
	}
	if len(h) > 63 {
		h = h[:63]
	}
	return h
}

// writeNetFiles writes the pod's /etc/hosts and /etc/resolv.conf.
func writeNetFiles(dir, name string, ip netip.Addr) (hosts, resolv string, err error) {
	hosts = filepath.Join(dir, "hosts")
	content := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if name != "" {
		content += ip.String() + "\t" + name + "\n"
	}
	if err := os.WriteFile(hosts, []byte(content), 0o644); err != nil {
		return "", "", fmt.Errorf("writing %s: %w", hosts, err)
	}
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return hosts, "", nil
	}
	resolv = filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolv, b, 0o644); err != nil {
		return "", "", fmt.Errorf("writing %s: %w", resolv, err)
	}
	return hosts, resolv, nil
}

func (r *Runtime) prepareBundle(bundle string, in specInput, layers []string) error {
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		return fmt.Errorf("creating bundle %s: %w", bundle, err)
	}
	overlay, err := mountRootfs(bundle, layers)
	if err != nil {
		return err
	}
	if !overlay {
		r.log.Warn("overlayfs not available, copied the image", "bundle", bundle)
	}
	rootfs := filepath.Join(bundle, "rootfs")
	if sc := in.Container.SecurityContext; in.Image.User != "" || sc != nil && (sc.RunAsUser != nil || sc.RunAsGroup != nil) {
		passwd, _ := openInRoot(rootfs, "etc/passwd")
		group, _ := openInRoot(rootfs, "etc/group")
		u, err := containerUser(in.Image.User, sc, nilIfNil(passwd), nilIfNil(group))
		if passwd != nil {
			passwd.Close()
		}
		if group != nil {
			group.Close()
		}
		if err != nil {
			return fmt.Errorf("spec.containers[%d]: image user: %w", in.Index, err)
		}
		in.User = u
	}
	in.NoSeccomp, in.HostCaps = r.noSeccomp, r.hostCaps
	spec, err := buildSpec(in)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return fmt.Errorf("writing spec: %w", err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		return fmt.Errorf("writing spec: %w", err)
	}
	return nil
}

// nilIfNil turns a nil *os.File into a nil io.Reader interface.
func nilIfNil(f *os.File) interface{ Read([]byte) (int, error) } {
	if f == nil {
		return nil
	}
	return f
}

// logIO gives runc one log file as the container's stdout and stderr.
type logIO struct{ f *os.File }

func (o logIO) Close() error          { return nil } // the file is closed by its owner
func (o logIO) Stdin() io.WriteCloser { return nil }
func (o logIO) Stdout() io.ReadCloser { return nil }
func (o logIO) Stderr() io.ReadCloser { return nil }
func (o logIO) Set(cmd *exec.Cmd)     { cmd.Stdout, cmd.Stderr = o.f, o.f }

// run starts ctr with `runc run --detach`. The container's init, orphaned
// when runc exits, is re-parented to the riklet (a child subreaper, see
// New), which waits for it to learn its exit code. The container writes
// straight into its log file.
func (r *Runtime) run(ctx context.Context, p *pod, ctr *container, bundle string) error {
	logPath := filepath.Join(r.logDir(p.ID), ctr.Name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening log %s: %w", logPath, err)
	}
	defer f.Close() // the container has its own copy
	pidFile := filepath.Join(bundle, "init.pid")
	_ = os.Remove(pidFile)
	sctx, cancel := context.WithTimeout(ctx, r.cfg.StartWait)
	defer cancel()
	if _, err := r.runc.Run(sctx, ctr.RuncID, bundle, &runc.CreateOpts{IO: logIO{f}, PidFile: pidFile, Detach: true}); err != nil {
		if pid, perr := readPid(pidFile); perr == nil {
			ctr.pid = pid // left to us, waited for by nobody: stopContainer reaps it
		}
		return fmt.Errorf("runc run %s: %w: %s", ctr.RuncID, err, tailFile(logPath, 5))
	}
	pid, err := readPid(pidFile)
	if err != nil {
		return fmt.Errorf("runc run %s: %w", ctr.RuncID, err)
	}
	ctr.done = make(chan struct{})
	// Not tracked by r.wg: this goroutine lives as long as the container.
	go func() {
		r.containerExited(p, ctr, r.reap(pid))
	}()
	return nil
}

// readPid reads the pid runc wrote in path.
func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("reading pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("bad pid %q", b)
	}
	return pid, nil
}

// reap waits for the container init pid, our child once runc has exited,
// and returns its exit code (128+signal when killed). Where it is not our
// child (no subreaper), it only watches it, and the code is unknown (nil).
func (r *Runtime) reap(pid int) *int {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			r.log.Debug("cannot wait for container process, watching it", "pid", pid, "err", err)
			r.watchPid(context.Background(), pid)
			return nil
		}
		break
	}
	code := ws.ExitStatus()
	if ws.Signaled() {
		code = 128 + int(ws.Signal())
	}
	return &code
}

// containerExited records an exit and reports it, once per pod, unless the
// pod is being stopped.
func (r *Runtime) containerExited(p *pod, ctr *container, code *int) {
	ctr.code = code
	close(ctr.done)
	<-p.ready
	r.mu.Lock()
	report := !r.closed && !p.stopping && !p.exited && r.pods[p.ID] == p
	if report {
		p.exited = true
	}
	r.mu.Unlock()
	if !report {
		return
	}
	st := runtime.Status{InstanceID: p.ID, Phase: runtime.PhaseExited, IP: p.IP, ExitCode: code}
	switch {
	case code == nil:
		st.Reason = api.ReasonUnknown
		st.Message = fmt.Sprintf("container %s exited while the riklet was not watching", ctr.Name)
	case *code == 0:
		st.Reason = api.ReasonCompleted
		st.Message = fmt.Sprintf("container %s exited with code 0", ctr.Name)
	default:
		st.Reason = api.ReasonError
		if cgroups.OOMKilled(r.cfg.CgroupDir + "/" + p.ID + "/" + ctr.Name) {
			st.Reason = api.ReasonOOMKilled
		}
		st.Message = fmt.Sprintf("container %s exited with code %d", ctr.Name, *code)
	}
	r.log.Info("container exited", "id", p.ID, "container", ctr.Name, "reason", st.Reason, "message", st.Message)
	r.report(st)
}

// save writes the pod record.
func (r *Runtime) save(p *pod) error {
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("saving pod %s: %w", p.ID, err)
	}
	if err := atomicfile.Write(filepath.Join(r.podDir(p.ID), "pod.json"), b, 0o600); err != nil {
		return fmt.Errorf("saving pod %s: %w", p.ID, err)
	}
	return nil
}

func (r *Runtime) load(id string) (*pod, error) {
	b, err := os.ReadFile(filepath.Join(r.podDir(id), "pod.json"))
	if err != nil {
		return nil, err
	}
	var p pod
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("reading pod %s: %w", id, err)
	}
	p.ID = id
	return &p, nil
}

// Stop stops the pod's containers (SIGTERM, StopGrace, SIGKILL) and removes
// everything it holds. Stopping an unknown pod is not an error.
func (r *Runtime) Stop(ctx context.Context, inst runtime.Instance) error {
	if err := validID(inst.ID); err != nil {
		return err
	}
	unlock := r.locks.Lock(inst.ID)
	defer unlock()
	return r.cleanup(ctx, inst.ID, inst.Workload.Spec.Containers)
}

// cleanup stops and removes everything pod id may hold: the containers of
// its record and of spec, their bundles and mounts, cgroups, network,
// exposure. Missing pieces are fine. Call with the pod's lock held.
func (r *Runtime) cleanup(ctx context.Context, id string, spec []workload.Container) error {
	r.mu.Lock()
	p := r.pods[id]
	if p != nil {
		p.stopping = true
	}
	r.mu.Unlock()
	if p == nil {
		p, _ = r.load(id)
	}
	// Every container that may exist: from memory or disk, and from spec.
	ctrs := map[string]*container{}
	if p != nil {
		for _, c := range p.Containers {
			ctrs[c.RuncID] = c
		}
	}
	for _, c := range spec {
		if _, ok := ctrs[runcID(id, c.Name)]; !ok {
			ctrs[runcID(id, c.Name)] = &container{Name: c.Name, RuncID: runcID(id, c.Name)}
		}
	}
	var errs []error
	if r.cfg.Exposer != nil && p != nil && len(p.Ports) > 0 {
		if err := r.cfg.Exposer.Unexpose(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("unexposing pod %s: %w", id, err))
		}
	}
	var wg sync.WaitGroup
	var emu sync.Mutex
	for _, c := range ctrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.stopContainer(ctx, c); err != nil {
				emu.Lock()
				errs = append(errs, err)
				emu.Unlock()
			}
		}()
	}
	wg.Wait()
	dir := r.podDir(id)
	if len(errs) > 0 {
		// A container may still run: its rootfs, cgroup and address (the
		// lease) stay until it is stopped; the caller retries.
		return fmt.Errorf("stopping pod %s: %w", id, errors.Join(errs...))
	}
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			if e.IsDir() {
				if err := unmountRootfs(filepath.Join(dir, e.Name())); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if err := cgroups.Remove(r.cfg.CgroupDir + "/" + id); err != nil {
		errs = append(errs, err)
	}
	if err := r.net.Teardown(ctx, id); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", dir, err))
		}
	}
	r.mu.Lock()
	if r.pods[id] == p || p == nil {
		delete(r.pods, id)
	}
	r.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stopping pod %s: %w", id, err)
	}
	return nil
}

// removeUnloadable removes the state runc keeps of a container it cannot
// load: a `runc run` killed (start timeout, CPU starvation) before it
// recorded the container leaves a directory under its root that makes
// every later `runc run` of the id fail ("container with given ID already
// exists"). Its processes, if any, are in the pod's cgroup, removed next.
func (r *Runtime) removeUnloadable(ctx context.Context, c *container) error {
	dir := filepath.Join(r.cfg.RuncRoot, c.RuncID)
	if _, err := os.Stat(dir); err != nil {
		return nil // no such container
	}
	_ = r.runc.Delete(ctx, c.RuncID, &runc.DeleteOpts{Force: true})
	if _, err := r.runc.State(ctx, c.RuncID); err == nil || ctx.Err() != nil {
		return fmt.Errorf("container %s: runc could not load it, then could: try again", c.RuncID)
	}
	r.log.Warn("removing the state of a container runc cannot load", "container", c.RuncID)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing broken container %s: %w", c.RuncID, err)
	}
	return nil
}

// stopContainer sends SIGTERM, waits StopGrace, sends SIGKILL, then deletes
// the container from runc.
func (r *Runtime) stopContainer(ctx context.Context, c *container) error {
	st, err := r.runc.State(ctx, c.RuncID)
	if err != nil {
		if ctx.Err() != nil { // runc could not even be asked
			return fmt.Errorf("stopping container %s: %w", c.RuncID, ctx.Err())
		}
		if c.done != nil {
			select { // the runc run of a container that never got made
			case <-c.done:
			case <-ctx.Done():
				return fmt.Errorf("stopping container %s: %w", c.RuncID, ctx.Err())
			}
		}
		return r.removeUnloadable(ctx, c) // no such container, or a broken one
	}
	if st.Status == "running" || st.Status == "paused" || st.Status == "created" {
		if err := r.runc.Kill(ctx, c.RuncID, int(unix.SIGTERM), nil); err != nil {
			r.log.Debug("SIGTERM", "container", c.RuncID, "err", err)
		}
		if !r.waitStopped(ctx, c, st.Pid, r.cfg.StopGrace) {
			r.log.Info("container did not stop in time, killing", "container", c.RuncID, "grace", r.cfg.StopGrace)
			if err := r.runc.Kill(ctx, c.RuncID, int(unix.SIGKILL), &runc.KillOpts{All: true}); err != nil {
				r.log.Debug("SIGKILL", "container", c.RuncID, "err", err)
			}
			r.waitStopped(ctx, c, st.Pid, 10*time.Second)
		}
	}
	if c.done == nil {
		// Nobody waits for this init: one whose `runc run` was given up on
		// is our child (we are a subreaper) and now a zombie. runc gives
		// no pid for a container whose init already ended.
		pid := st.Pid
		if pid <= 0 {
			pid = c.pid
		}
		reapZombie(pid)
	}
	if err := r.runc.Delete(ctx, c.RuncID, &runc.DeleteOpts{Force: true}); err != nil {
		if _, serr := r.runc.State(ctx, c.RuncID); serr == nil || ctx.Err() != nil {
			return fmt.Errorf("deleting container %s: %w", c.RuncID, err)
		}
	}
	if c.done != nil {
		select { // runc run returns once the container is gone
		case <-c.done:
		case <-time.After(5 * time.Second):
		}
	}
	return nil
}

// waitStopped waits until the container's process ended, at most d.
func (r *Runtime) waitStopped(ctx context.Context, c *container, pid int, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	if c.done != nil {
		select {
		case <-c.done:
			return true
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if !processAlive(pid) {
			return true
		}
		select {
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}

// reapZombie collects pid if it is an ended child of ours; it does nothing
// for a process that runs or that is not our child.
func reapZombie(pid int) {
	if pid <= 0 {
		return
	}
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie is dead for our purpose.
	_, rest, ok := strings.Cut(string(b), ") ")
	return ok && !strings.HasPrefix(rest, "Z")
}

// Recover adopts the owned pods whose containers all still run, reports
// the others as exited, and removes every pod resource no owned instance
// holds (runc containers, bundles and mounts, cgroups, netns, veths,
// leases, logs).
func (r *Runtime) Recover(ctx context.Context, owned []runtime.Instance) ([]runtime.Status, error) {
	ownedIDs := map[string]bool{}
	for _, inst := range owned {
		ownedIDs[inst.ID] = true
	}
	list, err := r.runc.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing runc containers: %w", err)
	}
	byRuncID := map[string]*runc.Container{}
	for _, c := range list {
		byRuncID[c.ID] = c
	}
	var statuses []runtime.Status
	keep := map[string]bool{} // runc ids of owned pods
	for _, inst := range owned {
		if validID(inst.ID) != nil {
			continue
		}
		st := r.adopt(ctx, inst, byRuncID)
		statuses = append(statuses, st)
		if p, err := r.load(inst.ID); err == nil {
			for _, c := range p.Containers {
				keep[c.RuncID] = true
			}
		}
	}
	var errs []error
	var running []string // runc ids of orphan containers that could not be stopped
	// Containers nobody owns, stopped concurrently: each may take its
	// stop grace, and the node registers only once recovered.
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range list {
		if keep[c.ID] {
			continue
		}
		r.log.Info("removing orphan container", "container", c.ID)
		wg.Go(func() {
			if err := r.stopContainer(ctx, &container{RuncID: c.ID}); err != nil {
				mu.Lock()
				errs = append(errs, err)
				running = append(running, c.ID)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	// Pod directories, logs, cgroups, networks nobody owns.
	orphans := map[string]bool{}
	for _, sub := range []string{"pods", "logs"} {
		ents, _ := os.ReadDir(filepath.Join(r.cfg.StateDir, sub))
		for _, e := range ents {
			orphans[e.Name()] = true
		}
	}
	for _, id := range cgroups.Children(r.cfg.CgroupDir) {
		orphans[id] = true
	}
	netOwners, err := r.net.Owners()
	if err != nil {
		errs = append(errs, err)
	}
	for _, id := range netOwners {
		orphans[id] = true
	}
	for id := range orphans {
		if ownedIDs[id] || validID(id) != nil {
			continue
		}
		if slices.ContainsFunc(running, func(rid string) bool { return strings.HasPrefix(rid, id+"-") }) {
			continue // its container still runs: keep its address and network
		}
		r.log.Info("removing orphan pod resources", "id", id)
		unlock := r.locks.Lock(id)
		if err := r.cleanup(ctx, id, nil); err != nil {
			errs = append(errs, err)
		}
		unlock()
		if err := os.RemoveAll(r.logDir(id)); err != nil {
			errs = append(errs, err)
		}
	}
	return statuses, errors.Join(errs...)
}

// adopt takes over an owned pod found running, or reports it exited.
func (r *Runtime) adopt(ctx context.Context, inst runtime.Instance, byRuncID map[string]*runc.Container) runtime.Status {
	unlock := r.locks.Lock(inst.ID)
	defer unlock()
	p, err := r.load(inst.ID)
	if err != nil {
		return runtime.Status{InstanceID: inst.ID, Phase: runtime.PhaseFailed, Reason: api.ReasonNotFound, Message: "pod not found on node"}
	}
	var gone []string
	for _, c := range p.Containers {
		rc, ok := byRuncID[c.RuncID]
		if !ok || rc.Status != "running" {
			gone = append(gone, c.Name)
		}
	}
	n, netOK := r.net.Get(inst.ID)
	if len(gone) > 0 || !netOK || len(p.Containers) == 0 {
		msg := "pod network gone"
		if len(gone) > 0 {
			msg = fmt.Sprintf("container %s exited while the riklet was down", strings.Join(gone, ", "))
		}
		return runtime.Status{InstanceID: inst.ID, Phase: runtime.PhaseExited, IP: p.IP, Reason: api.ReasonUnknown, Message: msg}
	}
	p.ready = make(chan struct{})
	close(p.ready)
	p.IP = n.IP.String()
	for _, c := range p.Containers {
		c.done = make(chan struct{})
		pid := byRuncID[c.RuncID].Pid
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if r.watchPid(r.bg, pid) {
				r.containerExited(p, c, nil)
			}
		}()
	}
	if r.cfg.Exposer != nil && len(p.Ports) > 0 {
		if err := r.cfg.Exposer.Expose(ctx, p.ID, n.IP, p.Ports); err != nil {
			r.log.Warn("re-exposing adopted pod", "id", p.ID, "err", err)
		}
	}
	r.mu.Lock()
	r.pods[p.ID] = p
	r.mu.Unlock()
	r.log.Info("adopted running pod", "id", p.ID, "ip", p.IP)
	return p.status()
}

// watchPid waits until process pid (not a child of ours) has ended, and
// reports whether it did (false: ctx ended first).
func (r *Runtime) watchPid(ctx context.Context, pid int) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return true // already gone
	}
	defer unix.Close(fd)
	for ctx.Err() == nil {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 500)
		if err != nil && errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n > 0 {
			return true
		}
	}
	return false
}

// tailFile returns the last n lines of a file, for error messages.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "no output"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	out := strings.TrimSpace(strings.Join(lines, " | "))
	if out == "" {
		return "no output"
	}
	return out
}
