// Package chaos runs rik's real binaries (controller, scheduler, three
// riklets) in network namespaces under a seeded schedule of faults — kill
// -9 and restart of any component, SIGTERM mid-operation, fast restart
// loops, a node cut off from the scheduler, the store's disk full, CPU
// starvation — while a workload mix creates and deletes pods (and a
// Function where a guest kernel is available). Invariants are checked
// from outside (the REST API and each node's real state: runc, QEMU,
// leases, netns, veths, TAPs, iptables, cgroups, ledger) continuously and
// at the end. A failing run prints its seed and the timeline that led to it.
//
// The harness is in these non-test files so that other suites can use it;
// the tests are in chaos_test.go. It needs root, runc, iptables, nsenter
// and the binaries of `make build` (RIK_BIN_DIR).
package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rik-org/rik/internal/testutil"
	"github.com/rik-org/rik/internal/testutil/netns"
)

// Topology: namespace "net" holds bridge br0; "ctl" (controller, scheduler,
// registry, rootfs server) and each node have an eth0 on it, in
// 172.31.0.0/24, which exists only inside these namespaces.
const (
	ctlIP       = "172.31.0.1"
	apiPort     = 5000
	workersPort = 4995
	ctrlPort    = 4996
)

// Options configure a Cluster.
type Options struct {
	Nodes       int           // riklets, default 3
	NodeTimeout time.Duration // scheduler --node-timeout, default 4s
	Heartbeat   time.Duration // riklet --heartbeat, default 1s
	StoreSize   int           // MiB of the controller's store tmpfs, default 64
	Kernel      string        // guest kernel: functions are offered when set
	Modules     string        // its lib/modules/<version>
}

// Bins are the binaries under test.
type Bins struct{ Controller, Scheduler, Riklet, RikInit string }

// BinsFrom finds the binaries in dir (RIK_BIN_DIR, `make build`'s bin/).
func BinsFrom(dir string) (Bins, error) {
	b := Bins{
		Controller: filepath.Join(dir, "controller"), Scheduler: filepath.Join(dir, "scheduler"),
		Riklet: filepath.Join(dir, "riklet"), RikInit: filepath.Join(dir, "rik-init"),
	}
	for _, p := range []string{b.Controller, b.Scheduler, b.Riklet, b.RikInit} {
		if _, err := os.Stat(p); err != nil {
			return b, fmt.Errorf("binary missing (RIK_BIN_DIR=%s; run make build): %w", dir, err)
		}
	}
	return b, nil
}

// Cluster is a controller, a scheduler and riklets, each in its namespace.
type Cluster struct {
	t     testing.TB
	opts  Options
	bins  Bins
	Dir   string
	net   *netns.NS
	ctl   *netns.NS
	Nodes []*Node

	Scheduler, Controller *Proc
	procs                 []*Proc
	storeDir              string // the controller's DATABASE_LOCATION, a tmpfs
	Registry              string // host:port of the image registry
	RootfsURL             string // guest rootfs, when functions are offered
	api                   *http.Client
	sec                   *security
}

// Node is one riklet host.
type Node struct {
	Name, IP     string
	Index        int
	NS           *netns.NS
	StateDir     string
	CgroupParent string
	port         string // its veth on the bridge (in c.net)
	Riklet       *Proc
}

// RuncRoot is where the node's pod runtime keeps runc state.
func (n *Node) RuncRoot() string { return filepath.Join(n.StateDir, "pods", "runc") }

// commandLine is the command line (arguments and environment) of every
// component the harness starts: the one place to add flags (TLS, tokens).
func (c *Cluster) commandLine(role string, n *Node) (bin string, args, env []string) {
	workers := net.JoinHostPort(ctlIP, strconv.Itoa(workersPort))
	ctrls := net.JoinHostPort(ctlIP, strconv.Itoa(ctrlPort))
	switch role {
	case "scheduler":
		return c.bins.Scheduler, append([]string{"--workersip", workers, "--ctrlip", ctrls,
			"--node-timeout", c.opts.NodeTimeout.String(), "--log-level", "debug"}, c.sec.schedulerArgs()...), nil
	case "controller":
		return c.bins.Controller, nil, append([]string{
			"PORT=" + strconv.Itoa(apiPort),
			"DATABASE_LOCATION=" + c.storeDir,
			"SCHEDULER_URL=http://" + ctrls,
			"LOG_LEVEL=debug",
		}, c.sec.controllerEnv()...)
	case "riklet":
		args = []string{
			"--master-ip", workers,
			"--hostname", n.Name,
			"--state-dir", n.StateDir,
			"--heartbeat", c.opts.Heartbeat.String(),
			"--pod-cidr", fmt.Sprintf("10.63.%d.0/24", n.Index),
			"--function-cidr", fmt.Sprintf("10.62.%d.0/24", n.Index),
			"--cgroup-parent", n.CgroupParent,
			"--insecure-registry", c.Registry,
			"--log-level", "debug",
		}
		args = append(args, c.sec.rikletArgs()...)
		if c.opts.Kernel != "" {
			args = append(args, "--vmm", "qemu", "--kernel-path", c.opts.Kernel,
				"--kernel-modules", c.opts.Modules, "--init-binary", c.bins.RikInit)
		}
		return c.bins.Riklet, args, nil
	case "uninstall":
		_, args, _ := c.commandLine("riklet", n)
		return c.bins.Riklet, append(args, "--uninstall"), nil
	}
	panic("chaos: unknown role " + role)
}

// NewCluster creates the namespaces, the store's tmpfs, the registry (and
// rootfs server), starts the scheduler, the controller and the riklets,
// and waits until every node is Ready. Everything is removed when the test
// ends.
func NewCluster(t testing.TB, bins Bins, opts Options) *Cluster {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "ip", "nsenter", "iptables", "nft", "runc", "mount", "umount")
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.NodeTimeout == 0 {
		opts.NodeTimeout = 4 * time.Second
	}
	if opts.Heartbeat == 0 {
		opts.Heartbeat = time.Second
	}
	if opts.StoreSize == 0 {
		opts.StoreSize = 64
	}
	c := &Cluster{t: t, opts: opts, bins: bins}
	dir, err := os.MkdirTemp("", "rik-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	c.Dir = dir
	t.Cleanup(func() { c.removeDir() }) // registered first: runs last

	c.storeDir = filepath.Join(dir, "store")
	must(t, os.MkdirAll(c.storeDir, 0o700))
	run(t, "mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm", opts.StoreSize), "rik-chaos-store", c.storeDir)
	t.Cleanup(func() { _ = unix.Unmount(c.storeDir, unix.MNT_DETACH) })

	c.net = netns.New(t)
	c.net.Run(t, "ip", "link", "add", "br0", "type", "bridge")
	c.net.Run(t, "ip", "link", "set", "br0", "up")
	c.ctl, _ = c.attach(ctlIP)
	c.sec = newSecurity(t, dir)
	c.api = c.sec.apiClient(t, nsClient(c.ctl, 10*time.Second), c.storeDir)
	c.Registry = serveRegistry(t, c.ctl)
	if opts.Kernel != "" {
		c.RootfsURL = serveRootfs(t, c.ctl)
	}
	c.Scheduler = c.startProc("scheduler", c.ctl, nil)
	c.Controller = c.startProc("controller", c.ctl, nil)
	for i := 1; i <= opts.Nodes; i++ {
		c.addNode(i)
	}
	c.WaitReady(90 * time.Second)
	return c
}

// attach creates a namespace with eth0 (addr) on the bridge; it returns
// the namespace and the name of its port on the bridge.
func (c *Cluster) attach(addr string) (*netns.NS, string) {
	ns := netns.New(c.t)
	port := "p" + strings.TrimPrefix(ns.Name, "rikt-")
	netns.Veth(c.t, ns, "eth0", addr+"/24", c.net, port, "")
	c.net.Run(c.t, "ip", "link", "set", port, "master", "br0")
	return ns, port
}

func (c *Cluster) addNode(i int) {
	n := &Node{Name: fmt.Sprintf("node%d", i), IP: fmt.Sprintf("172.31.0.%d", 10+i), Index: i}
	n.NS, n.port = c.attach(n.IP)
	n.StateDir = filepath.Join(c.Dir, n.Name)
	n.CgroupParent = "rik-chaos-" + strings.TrimPrefix(n.NS.Name, "rikt-")
	c.t.Cleanup(func() { cleanupNode(c.t, n) }) // after the riklet is killed
	n.Riklet = c.startProc("riklet", n.NS, n)
	c.Nodes = append(c.Nodes, n)
}

// startProc starts a component, killed when the test ends.
func (c *Cluster) startProc(role string, ns *netns.NS, n *Node) *Proc {
	name := role
	if n != nil {
		name = role + "-" + n.Name
	}
	p := &Proc{Name: name, ns: ns, log: filepath.Join(c.Dir, name+".log")}
	p.bin, p.args, p.env = c.commandLine(role, n)
	if err := p.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.procs = append(c.procs, p)
	c.t.Cleanup(func() { p.Stop(syscall.SIGKILL) })
	return p
}

// Procs are the cluster's components.
func (c *Cluster) Procs() []*Proc { return c.procs }

// Uninstall runs `riklet --uninstall` for node n (its riklet stopped).
func (c *Cluster) Uninstall(n *Node) (string, error) {
	bin, args, _ := c.commandLine("uninstall", n)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + n.NS.Path, "--", bin}, args...)...).CombinedOutput()
	return string(out), err
}

// SetLinkUp sets node n's port on the bridge up or down: down cuts it off
// from the scheduler (and everything else).
func (c *Cluster) SetLinkUp(n *Node, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	_, err := c.net.Exec(context.Background(), "ip", "link", "set", n.port, state)
	return err
}

// FillStore fills the controller's store filesystem; free removes the filler.
func (c *Cluster) FillStore() (free func(), err error) {
	p := filepath.Join(c.storeDir, "filler")
	f, err := os.Create(p)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			break // ENOSPC: full
		}
	}
	f.Close()
	return func() { _ = os.Remove(p) }, nil
}

// removeDir removes the work directory, unless the test failed and
// RIK_CHAOS_KEEP=1 asks to keep the logs and state.
func (c *Cluster) removeDir() {
	unmountUnder(c.Dir)
	if c.t.Failed() && os.Getenv("RIK_CHAOS_KEEP") == "1" {
		c.t.Logf("RIK_CHAOS_KEEP=1: keeping %s", c.Dir)
		return
	}
	if err := os.RemoveAll(c.Dir); err != nil {
		c.t.Errorf("removing %s: %v", c.Dir, err)
	}
}

// DumpLogs logs the tail of every component's log.
func (c *Cluster) DumpLogs(lines int) {
	for _, p := range c.procs {
		b, err := os.ReadFile(p.log)
		if err != nil {
			continue
		}
		ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(ls) > lines {
			ls = ls[len(ls)-lines:]
		}
		c.t.Logf("----- %s (%s) -----\n%s", p.Name, p.log, strings.Join(ls, "\n"))
	}
}

// Proc is a component started with nsenter inside its namespace (nsenter
// execs, so the PID is the binary's own).
type Proc struct {
	Name string
	ns   *netns.NS
	bin  string
	args []string
	env  []string
	log  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start (re)starts the process; its output is appended to its log.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != nil {
		select {
		case <-p.done:
		default:
			return nil // running
		}
	}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "=== %s: starting %s %s\n", time.Now().Format(time.RFC3339Nano), p.bin, strings.Join(p.args, " "))
	// nsenter, not `ip netns exec`: the latter remounts /sys, hiding the
	// cgroup tree from runc.
	cmd := exec.Command("nsenter", append([]string{"--net=" + p.ns.Path, "--", p.bin}, p.args...)...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := startOnSpawner(cmd); err != nil {
		f.Close()
		return fmt.Errorf("starting %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(f, "=== %s: exited: %v\n", time.Now().Format(time.RFC3339Nano), err)
		f.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	return nil
}

// Running reports whether the process is alive.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Signal sends sig without waiting.
func (p *Proc) Signal(sig syscall.Signal) {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Signal(sig)
	}
}

// Stop sends sig and waits for the process to exit (SIGKILL after 20 s).
func (p *Proc) Stop(sig syscall.Signal) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

var (
	spawn     = make(chan func())
	spawnOnce sync.Once
)

// startOnSpawner starts cmd from one goroutine locked to its OS thread for
// the life of the test binary: Pdeathsig fires when the forking thread
// exits, and Go ends threads locked by netns.Do.
func startOnSpawner(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		go func() {
			runtime.LockOSThread()
			for fn := range spawn {
				fn()
			}
		}()
	})
	errc := make(chan error, 1)
	spawn <- func() { errc <- cmd.Start() }
	return <-errc
}

// nsClient is an HTTP client whose connections are made from inside ns.
func nsClient(ns *netns.NS, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				var conn net.Conn
				err := ns.Do(func() error {
					var err error
					conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
					return err
				})
				return conn, err
			},
		},
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// cleanupNode removes what a node may leave behind once its riklet is
// dead: runc containers, VMs and processes using its state directory,
// mounts under it, its cgroup parent.
func cleanupNode(t testing.TB, n *Node) {
	if cs, err := runcList(n); err == nil {
		for _, ctr := range cs {
			_ = exec.Command("runc", "--root", n.RuncRoot(), "delete", "-f", ctr.ID).Run()
		}
	}
	for _, pid := range processesMatching(n.StateDir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	unmountUnder(n.StateDir)
	for _, root := range cgroupRoots(n.CgroupParent) {
		var all []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				all = append(all, p)
			}
			return nil
		})
		for i := len(all) - 1; i >= 0; i-- {
			if err := os.Remove(all[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Logf("cleanup: removing cgroup %s: %v", all[i], err)
			}
		}
	}
}

// unmountUnder lazily unmounts every mount point under dir, deepest first.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mps []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			mps = append(mps, f[4])
		}
	}
	for i := range mps { // deepest first
		for j := i + 1; j < len(mps); j++ {
			if len(mps[j]) > len(mps[i]) {
				mps[i], mps[j] = mps[j], mps[i]
			}
		}
	}
	for _, mp := range mps {
		_ = unix.Unmount(mp, unix.MNT_DETACH)
	}
}
