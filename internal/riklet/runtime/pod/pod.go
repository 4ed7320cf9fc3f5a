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
// Everything the runtime does to the node (runc, the container processes,
// the pod network, rootfs mounts, cgroups) goes through small interfaces
// (host.go): New wires the real ones, the tests also run the lifecycle
// against stateful fakes, without root.
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
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/keylock"
	"github.com/rik-org/rik/internal/riklet/cgroups"
	"github.com/rik-org/rik/internal/riklet/image"
	"github.com/rik-org/rik/internal/riklet/podnet"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/workload"
)

// Exposer publishes a pod's ports on the node (the sdn package). Expose is
// called once the pod's network is up, Unexpose when it stops.
type Exposer interface {
	Expose(ctx context.Context, id string, ip netip.Addr, ports []workload.PortMapping) error
	Unexpose(ctx context.Context, id string) error
}

// Config configures a Runtime.
type Config struct {
	StateDir   string       // required
	RuncBinary string       // default "runc"
	RuncRoot   string       // default <StateDir>/runc
	PodCIDR    netip.Prefix // default 10.63.0.0/16
	// PodSubnet, when set, gives the node's pod range instead of PodCIDR
	// once the control plane allocated it (podnet.Config.Subnet).
	PodSubnet func(ctx context.Context) (netip.Prefix, error)
	// Network, when set, replaces the built-in pod network (PodCIDR,
	// PodSubnet, Bridge, HostNetns are then unused): CNI.
	Network    Network
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
	// IPAM is the pod address pool; nil: podnet's own in <StateDir>/net
	// (shared with bridge-mode Functions: see runtimes).
	IPAM   podnet.Allocator
	Logger *slog.Logger

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
	images *image.Store
	host

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
	if err := os.MkdirAll(cfg.RuncRoot, 0o700); err != nil {
		return nil, fmt.Errorf("pod runtime: %w", err)
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
	nm := cfg.Network
	if nm == nil {
		pn, err := podnet.New(podnet.Config{
			StateDir:  filepath.Join(cfg.StateDir, "net"),
			CIDR:      cfg.PodCIDR,
			Subnet:    cfg.PodSubnet,
			Bridge:    cfg.Bridge,
			HostNetns: cfg.HostNetns,
			IPAM:      cfg.IPAM,
			Logger:    cfg.Logger,
		})
		if err != nil {
			return nil, fmt.Errorf("pod runtime: %w", err)
		}
		nm = pn
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
	h := host{
		ctrs:    newRuncCLI(bin, cfg.RuncRoot),
		procs:   hostProcs{},
		net:     nm,
		mounts:  hostMounts{},
		cgroups: cgroups.Host{},
	}
	return newRuntime(ctx, cfg, report, images, h, hostCaps)
}

// newRuntime returns a runtime on h, cfg with its defaults set.
func newRuntime(ctx context.Context, cfg Config, report runtime.Reporter, images *image.Store, h host, hostCaps []string) (*Runtime, error) {
	if report == nil {
		report = func(runtime.Status) {}
	}
	for _, d := range []string{cfg.StateDir, filepath.Join(cfg.StateDir, "pods"), filepath.Join(cfg.StateDir, "logs")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("pod runtime: %w", err)
		}
	}
	r := &Runtime{
		cfg:      cfg,
		log:      cfg.Logger,
		report:   report,
		images:   images,
		host:     h,
		pods:     map[string]*pod{},
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

// cgroup is the cgroup of pod id (of its container name, if given).
func (r *Runtime) cgroup(id string, name ...string) string {
	return strings.Join(append([]string{r.cfg.CgroupDir, id}, name...), "/")
}

// namePattern is what runc accepts in a container name, starting with an
// alphanumeric (so never "." or "..").
var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// validID checks an instance id (workload.ValidInstanceID).
func validID(id string) error { return workload.ValidInstanceID(id) }

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

	// A pod that exited (or half-made leftovers) is cleaned first.
	if _, err := os.Stat(r.podDir(inst.ID)); err == nil {
		if err := r.cleanup(ctx, inst.ID, inst.Workload.Spec.Containers); err != nil {
			return failed(inst.ID, api.ReasonCleanupFailed, err), err
		}
	}
	// Images first: nothing to roll back if a pull fails.
	imgs, reason, err := r.pull(ctx, inst)
	if err != nil {
		return failed(inst.ID, reason, err), err
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

// pull pulls the images of inst's containers; on error, reason says why.
func (r *Runtime) pull(ctx context.Context, inst runtime.Instance) (imgs []image.Image, reason string, err error) {
	progress := func(msg string) {
		r.report(runtime.Status{InstanceID: inst.ID, Phase: runtime.PhaseCreating, Message: msg})
	}
	imgs = make([]image.Image, len(inst.Workload.Spec.Containers))
	for i, c := range inst.Workload.Spec.Containers {
		img, err := r.images.Pull(ctx, c.Image, progress)
		if err != nil {
			reason := api.ReasonImagePullFailed
			if errors.Is(err, image.ErrBadReference) {
				reason = api.ReasonInvalidImageName
			}
			return nil, reason, fmt.Errorf("spec.containers[%d].image: %w", i, err)
		}
		imgs[i] = img
	}
	return imgs, "", nil
}

func failed(id, reason string, err error) runtime.Status {
	return runtime.Status{InstanceID: id, Phase: runtime.PhaseFailed, Reason: reason, Message: err.Error()}
}
