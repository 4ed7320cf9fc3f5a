package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/testutil"
	"github.com/rik-org/rik/internal/testutil/netns"
	"github.com/rik-org/rik/internal/workload"
	"golang.org/x/sys/unix"
)

// Topology: a "net" namespace holds bridge br0; the ctl, client and node
// namespaces each have an eth0 on it, in 172.31.0.0/24 — addresses that
// exist only inside these namespaces.
const (
	ctlIP       = "172.31.0.1"
	clientIP    = "172.31.0.2"
	subnetBits  = "/24"
	nodeIPBase  = 10 // node N (1-based) is 172.31.0.<10+N>
	apiPort     = 5000
	workersPort = 4995
	ctrlPort    = 4996
	etcdPort    = 2379
)

// requireHost needs root and the tools every e2e test uses. End-to-end
// tests are not unit tests: -short skips them.
func requireHost(t testing.TB, tools ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	testutil.RequireRoot(t)
	testutil.RequireTool(t, append([]string{"ip", "nsenter", "iptables", "iptables-restore", "nft", "runc"}, tools...)...)
}

// alive returns an error naming a process that died unasked.
func (c *cluster) alive() error {
	for _, p := range c.procs {
		p.mu.Lock()
		wanted := p.wanted
		p.mu.Unlock()
		if wanted && !p.running() {
			return fmt.Errorf("%s exited (log %s)", p.name, p.log)
		}
	}
	return nil
}

// eventually is eventually that fails at once if a process died.
func (c *cluster) eventually(timeout time.Duration, what string, fn func() error) {
	c.t.Helper()
	eventually(c.t, timeout, what, func() error {
		if err := c.alive(); err != nil {
			c.t.Fatalf("%s: %v", what, err)
		}
		return fn()
	})
}

// eventually calls fn until it returns nil, failing the test with fn's
// last error after timeout.
func eventually(t testing.TB, timeout time.Duration, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %v", what, timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// proc is a process started inside a namespace with nsenter (which execs,
// so the PID is the binary's own).
type proc struct {
	name string
	ns   *netns.NS
	bin  string
	args []string
	env  []string
	log  string // log file, shared by restarts

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	wanted bool // started and not deliberately stopped
}

// start (re)starts the process; its output is appended to p.log.
func (p *proc) start(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("opening log of %s: %v", p.name, err)
	}
	fmt.Fprintf(f, "=== %s: starting %s %s\n", time.Now().Format(time.RFC3339Nano), p.bin, strings.Join(p.args, " "))
	// nsenter, not `ip netns exec`: the latter remounts /sys in a new
	// mount namespace, which hides /sys/fs/cgroup from runc.
	cmd := exec.Command("nsenter", append([]string{"--net=" + p.ns.Path, "--", p.bin}, p.args...)...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	// Die with the test binary rather than outlive a killed test run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := startOnSpawner(cmd); err != nil {
		f.Close()
		t.Fatalf("starting %s: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(f, "=== %s: exited: %v\n", time.Now().Format(time.RFC3339Nano), err)
		f.Close()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done, p.wanted = cmd, done, true
	p.mu.Unlock()
}

// spawn carries start requests to the spawner goroutine.
var spawn = make(chan func())

// startOnSpawner starts cmd from one goroutine locked to its OS thread for
// the life of the test binary: Pdeathsig fires when the thread that forked
// the child exits, and Go ends other threads (those locked by netns.Do).
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

var spawnOnce sync.Once

// running reports whether the process is alive.
func (p *proc) running() bool {
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

// kill sends sig and waits for the process to exit (SIGKILL after 10 s).
func (p *proc) kill(sig syscall.Signal) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.wanted = false
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
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// node is one riklet host.
type node struct {
	name         string
	ns           *netns.NS
	ip           string
	stateDir     string
	cgroupParent string
	riklet       *proc
}

// runcRoot is where the node's pod runtime keeps runc state.
func (n *node) runcRoot() string { return filepath.Join(n.stateDir, "pods", "runc") }

// cluster is a controller, a scheduler and riklets, each in its namespace.
type cluster struct {
	t      testing.TB
	bins   bins
	dir    string
	net    *netns.NS // the bridge
	ctl    *netns.NS // controller, scheduler, test servers
	client *netns.NS // rikctl, HTTP clients
	nodes  []*node

	scheduler, controller *proc
	procs                 []*proc

	server    string // controller URL used by rikctl; "" = the first
	store     string // RIK_STORE of the controllers ("" = bolt)
	api       apiAccess
	insecure  bool   // every component in plaintext (--insecure)
	pki       string // the cluster CA's directory (`rik ca init`), when not insecure
	caHash    string // its hash, for riklet --ca-cert-hash
	ctlCerts  string // the controllers' certificate (controller.crt, .key) and ca.crt
	registry  string // host:port of the image registry (podCluster)
	rootfsURL string // guest rootfs (functionCluster)
}

// clusterOptions configure newCluster.
type clusterOptions struct {
	nodeTimeout time.Duration // scheduler --node-timeout; 0 = default
	etcd        bool          // store in an etcd server (the etcd binary) instead of bolt
	etcdMembers int           // > 1: store in an etcd cluster of that many members (startEtcdCluster)
	insecure    bool          // --insecure on every component (default: mutual TLS with a CA of `rik ca init`)
}

// newCluster creates the namespaces and starts the scheduler and the
// controller. Everything is torn down when the test ends.
func newCluster(t testing.TB, opts clusterOptions) *cluster {
	t.Helper()
	c := &cluster{t: t, bins: binaries(t), insecure: opts.insecure}
	dir, err := os.MkdirTemp("", "rik-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	c.dir = dir
	// Registered first, so it runs last: after every process is dead and
	// every leftover removed.
	t.Cleanup(func() { removeAll(t, dir) })

	c.net = netns.New(t)
	c.net.Run(t, "ip", "link", "add", "br0", "type", "bridge")
	c.net.Run(t, "ip", "link", "set", "br0", "up")
	c.ctl = c.attach("ctl", ctlIP)
	c.client = c.attach("client", clientIP)

	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs()
		}
	})

	schedArgs := []string{
		"--workersip", net.JoinHostPort(ctlIP, strconv.Itoa(workersPort)),
		"--ctrlip", net.JoinHostPort(ctlIP, strconv.Itoa(ctrlPort)),
		"--log-level", "debug",
	}
	if c.insecure {
		schedArgs = append(schedArgs, "--insecure")
	} else {
		c.initPKI()
		schedArgs = append(schedArgs, "--ca-dir", c.pki)
	}
	if opts.nodeTimeout > 0 {
		schedArgs = append(schedArgs, "--node-timeout", opts.nodeTimeout.String())
	}
	c.api = newAPIAccess(t, dir, c.ctlCerts)
	c.scheduler = c.startProc("scheduler", c.ctl, c.bins.scheduler, nil, schedArgs...)
	if opts.etcdMembers > 1 {
		c.store = c.startEtcdCluster(opts.etcdMembers)
	} else if opts.etcd {
		testutil.RequireTool(t, "etcd")
		c.store = "etcd://" + net.JoinHostPort(ctlIP, strconv.Itoa(etcdPort))
		c.startProc("etcd", c.ctl, "etcd", nil,
			"--name", "e2e", "--data-dir", filepath.Join(dir, "etcd"),
			"--listen-client-urls", "http://"+net.JoinHostPort(ctlIP, strconv.Itoa(etcdPort)),
			"--advertise-client-urls", "http://"+net.JoinHostPort(ctlIP, strconv.Itoa(etcdPort)),
			"--listen-peer-urls", "http://127.0.0.1:2380",
			"--initial-advertise-peer-urls", "http://127.0.0.1:2380",
			"--initial-cluster", "e2e=http://127.0.0.1:2380")
	}
	c.controller = c.addController(apiPort)
	return c
}

// addController starts a controller on port, using the cluster's store
// (its own bolt file, or the shared etcd), serving HTTPS with tokens, and
// waits until it is healthy. The first one's admin token is the cluster's.
func (c *cluster) addController(port int) *proc {
	c.t.Helper()
	data := filepath.Join(c.dir, fmt.Sprintf("controller-%d-data", port))
	p := c.startProc(fmt.Sprintf("controller-%d", port), c.ctl, c.bins.controller, []string{
		"PORT=" + strconv.Itoa(port),
		"DATABASE_LOCATION=" + data,
		"SCHEDULER_URL=http://" + net.JoinHostPort(ctlIP, strconv.Itoa(ctrlPort)),
		"RIK_STORE=" + c.store,
		"LOG_LEVEL=info",
	}, c.api.controllerArgs()...)
	c.eventually(60*time.Second, "controller healthy", func() error {
		_, err := c.get(c.client, c.controllerURL(port)+"/healthz")
		return err
	})
	if c.api.token == "" {
		c.api.useTokenOf(c.t, filepath.Join(data, "admin.token"), c.controllerURL(apiPort))
	}
	return p
}

// initPKI makes the cluster's CA with `rik ca init` and the controllers'
// certificate with `rik ca issue controller`, as an operator would.
func (c *cluster) initPKI() {
	c.t.Helper()
	c.pki = filepath.Join(c.dir, "pki")
	c.ctlCerts = filepath.Join(c.dir, "controller-certs")
	c.mustRik("ca", "init", "--dir", c.pki)
	c.caHash = strings.TrimSpace(c.mustRik("ca", "hash", "--dir", c.pki))
	c.mustRik("ca", "issue", "controller", "--dir", c.pki, "--san", ctlIP, "--out", c.ctlCerts)
}

// joinArgs are a new riklet's security flags: a fresh join token and the
// CA's hash, or --insecure.
func (c *cluster) joinArgs() []string {
	c.t.Helper()
	if c.insecure {
		return []string{"--insecure"}
	}
	return []string{"--join-token", c.token("1h"), "--ca-cert-hash", c.caHash}
}

// token creates a join token valid for ttl with `rik token create`.
func (c *cluster) token(ttl string) string {
	c.t.Helper()
	return strings.TrimSpace(c.mustRik("token", "create", "--ca-dir", c.pki, "--ttl", ttl))
}

// mustRik runs the rik binary on the host and returns its standard output.
func (c *cluster) mustRik(args ...string) string {
	c.t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(c.bins.rik, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		c.t.Fatalf("rik %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// controllerURL is the URL of the controller listening on port.
func (c *cluster) controllerURL(port int) string {
	return c.api.scheme() + "://" + net.JoinHostPort(ctlIP, strconv.Itoa(port))
}

// attach creates a namespace with eth0 (addr) on the bridge.
func (c *cluster) attach(role, addr string) *netns.NS {
	c.t.Helper()
	ns := netns.New(c.t)
	port := "p" + strings.TrimPrefix(ns.Name, "rikt-")
	netns.Veth(c.t, ns, "eth0", addr+subnetBits, c.net, port, "")
	c.net.Run(c.t, "ip", "link", "set", port, "master", "br0")
	c.t.Logf("namespace %s: %s (%s)", role, ns.Name, addr)
	return ns
}

// apiURL is the controller rikctl and the helpers talk to.
func (c *cluster) apiURL() string {
	if c.server != "" {
		return c.server
	}
	return c.controllerURL(apiPort)
}

// startProc starts a process, killed when the test ends.
func (c *cluster) startProc(name string, ns *netns.NS, bin string, env []string, args ...string) *proc {
	c.t.Helper()
	p := &proc{name: name, ns: ns, bin: bin, args: args, env: env, log: filepath.Join(c.dir, name+".log")}
	p.start(c.t)
	c.procs = append(c.procs, p)
	c.t.Cleanup(func() { p.kill(syscall.SIGTERM) })
	return p
}

// addNode creates node N's namespace and starts its riklet.
func (c *cluster) addNode(extraArgs ...string) *node {
	c.t.Helper()
	i := len(c.nodes) + 1
	return c.addNodeAt(fmt.Sprintf("172.31.0.%d", nodeIPBase+i), c.attach, extraArgs...)
}

// addNodeAt is addNode with the node's address ip, its namespace made by
// attach (c.attach: on the cluster's bridge).
func (c *cluster) addNodeAt(ip string, attach func(role, addr string) *netns.NS, extraArgs ...string) *node {
	c.t.Helper()
	i := len(c.nodes) + 1
	n := &node{name: fmt.Sprintf("node%d", i), ip: ip}
	n.ns = attach(n.name, n.ip)
	n.stateDir = filepath.Join(c.dir, n.name)
	// Registered before the riklet's kill, so it runs after it.
	c.t.Cleanup(func() { cleanupNode(c.t, n) })
	args := []string{
		"--master-ip", net.JoinHostPort(ctlIP, strconv.Itoa(workersPort)),
		"--hostname", n.name,
		"--state-dir", n.stateDir,
		"--heartbeat", "500ms",
		"--pod-cidr", fmt.Sprintf("10.63.%d.0/24", i),
		"--function-cidr", fmt.Sprintf("10.62.%d.0/24", i),
		"--log-level", "debug",
	}
	// Riklets sharing a host share its cgroup tree: give each its own
	// cgroup parent, else a rescheduled pod (same instance id on two nodes)
	// shares its cgroup with the copy it replaced, and destroying one kills
	// the other.
	n.cgroupParent = "rik-e2e-" + strings.TrimPrefix(n.ns.Name, "rikt-")
	args = append(args, "--cgroup-parent", n.cgroupParent)
	args = append(args, c.joinArgs()...)
	if fw := os.Getenv("RIK_E2E_FIREWALL"); fw != "" { // a whole run on one backend
		args = append(args, "--firewall", fw)
	}
	args = append(args, extraArgs...)
	n.riklet = c.startProc("riklet-"+n.name, n.ns, c.bins.riklet, nil, args...)
	c.nodes = append(c.nodes, n)
	return n
}

// dumpLogs prints every process's log (the tail of long ones).
func (c *cluster) dumpLogs() {
	for _, p := range c.procs {
		b, err := os.ReadFile(p.log)
		if err != nil {
			c.t.Logf("log of %s: %v", p.name, err)
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 150 {
			lines = append([]string{fmt.Sprintf("... (%d lines cut)", len(lines)-150)}, lines[len(lines)-150:]...)
		}
		c.t.Logf("----- log of %s (%s) -----\n%s", p.name, p.log, strings.Join(lines, "\n"))
	}
}

// rikctl runs rikctl in the client namespace against the controller.
func (c *cluster) rikctl(args ...string) (string, error) { return c.rikctlFor(30*time.Second, args...) }

// rikctlFor is rikctl, killed after timeout.
func (c *cluster) rikctlFor(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := append([]string{"--net=" + c.client.Path, "--", c.bins.rikctl, "--server", c.apiURL()}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", full...)
	cmd.Env = append(os.Environ(), "RIKCONFIG="+c.api.rikctlConfig, "RIK_TOKEN="+c.api.token) // the token for every --server
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("rikctl %s: %w: %s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// mustRikctl runs rikctl and fails the test if it fails.
func (c *cluster) mustRikctl(args ...string) string {
	c.t.Helper()
	out, err := c.rikctl(args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// instanceItem is an instance as rikctl prints it with -o json.
type instanceItem struct {
	ID    string            `json:"id"`
	Name  string            `json:"name"`
	Value workload.Instance `json:"value"`
}

// instances lists the instances with `rikctl get instances -o json`.
func (c *cluster) instances() ([]instanceItem, error) {
	out, err := c.rikctl("get", "instances", "-o", "json")
	if err != nil {
		return nil, err
	}
	var items []instanceItem
	if err := json.Unmarshal([]byte(out), &items); err != nil {
		return nil, fmt.Errorf("decoding rikctl get instances: %w: %s", err, out)
	}
	return items, nil
}

// instance returns one instance by name (or id) from the list.
func (c *cluster) instance(name string) (instanceItem, bool, error) {
	items, err := c.instances()
	if err != nil {
		return instanceItem{}, false, err
	}
	for _, it := range items {
		if it.Name == name || it.ID == name {
			return it, true, nil
		}
	}
	return instanceItem{}, false, nil
}

// waitStatus waits for instance name to reach status, and returns it.
// It fails at once if the instance reaches another terminal status.
func (c *cluster) waitStatus(name string, want workload.Status, timeout time.Duration) instanceItem {
	c.t.Helper()
	var got instanceItem
	c.eventually(timeout, fmt.Sprintf("instance %s %s", name, want), func() error {
		it, ok, err := c.instance(name)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("instance %s not listed", name)
		}
		if it.Value.Status != want {
			if it.Value.Status.Terminal() && it.Value.Status != want {
				c.t.Fatalf("instance %s is %s (reason %q, message %q), want %s", name, it.Value.Status, it.Value.Reason, it.Value.Message, want)
			}
			return fmt.Errorf("status %s (reason %q)", it.Value.Status, it.Value.Reason)
		}
		got = it
		return nil
	})
	return got
}

// waitGone waits until instance name is no longer listed.
func (c *cluster) waitGone(name string, timeout time.Duration) {
	c.t.Helper()
	c.eventually(timeout, "instance "+name+" gone", func() error {
		it, ok, err := c.instance(name)
		if err != nil {
			return err
		}
		if ok {
			return fmt.Errorf("still listed: %s (reason %q)", it.Value.Status, it.Value.Reason)
		}
		return nil
	})
}

// nodeItem is a node as `rikctl get nodes -o json` prints it.
type nodeItem struct {
	Name  string `json:"name"`
	Value struct {
		Status        string   `json:"status"`
		Kinds         []string `json:"kinds"`
		Address       string   `json:"address"`
		PodSubnet     string   `json:"podSubnet"`
		Instances     int      `json:"instances"`
		LastHeartbeat string   `json:"lastHeartbeat"`
	} `json:"value"`
}

func (c *cluster) nodesList() ([]nodeItem, error) {
	out, err := c.rikctl("get", "nodes", "-o", "json")
	if err != nil {
		return nil, err
	}
	var items []nodeItem
	if err := json.Unmarshal([]byte(out), &items); err != nil {
		return nil, fmt.Errorf("decoding rikctl get nodes: %w: %s", err, out)
	}
	return items, nil
}

// waitNodesReady waits until every named node is Ready and offers kind.
func (c *cluster) waitNodesReady(kind string, timeout time.Duration, names ...string) {
	c.t.Helper()
	c.eventually(timeout, fmt.Sprintf("nodes %v ready with kind %s", names, kind), func() error {
		items, err := c.nodesList()
		if err != nil {
			return err
		}
		for _, name := range names {
			found := false
			for _, it := range items {
				if it.Name != name {
					continue
				}
				found = true
				if it.Value.Status != "Ready" {
					return fmt.Errorf("node %s is %q", name, it.Value.Status)
				}
				if kind != "" && !contains(it.Value.Kinds, kind) {
					return fmt.Errorf("node %s offers %v, not %s", name, it.Value.Kinds, kind)
				}
			}
			if !found {
				return fmt.Errorf("node %s not listed (listed: %+v)", name, items)
			}
		}
		return nil
	})
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
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

// get fetches url from inside ns (with the API's CA and token for the
// controller); non-200 answers are errors.
func (c *cluster) get(ns *netns.NS, url string) (string, error) {
	resp, err := c.apiClient(ns, 5*time.Second).Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		return "", fmt.Errorf("reading %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return b.String(), fmt.Errorf("GET %s: %s: %s", url, resp.Status, b.String())
	}
	return b.String(), nil
}

// waitPage waits until GET url from ns returns a body containing want.
func (c *cluster) waitPage(ns *netns.NS, url, want string, timeout time.Duration) {
	c.t.Helper()
	c.eventually(timeout, fmt.Sprintf("GET %s from %s", url, ns.Name), func() error {
		body, err := c.get(ns, url)
		if err != nil {
			return err
		}
		if !strings.Contains(body, want) {
			return fmt.Errorf("body %q does not contain %q", body, want)
		}
		return nil
	})
}

// serve serves h inside the ctl namespace and returns its host:port.
func (c *cluster) serve(h http.Handler) string {
	c.t.Helper()
	var ln net.Listener
	if err := c.ctl.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort(ctlIP, "0"))
		return err
	}); err != nil {
		c.t.Fatalf("listening in ctl namespace: %v", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	c.t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// events collects the controller's event stream from the client namespace.
type events struct {
	mu    sync.Mutex
	items []instanceItem
	conns int // successful connections so far
}

// watchEvents follows GET /api/v0/events until the test ends, reconnecting
// when the stream ends (a restarted controller). It returns once the first
// connection is up.
func (c *cluster) watchEvents() *events {
	c.t.Helper()
	ev := &events{}
	ctx, cancel := context.WithCancel(context.Background())
	connect := func() (io.ReadCloser, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.apiURL()+"/api/v0/events?kinds=instance", nil)
		if err != nil {
			return nil, err
		}
		resp, err := c.apiClient(c.client, 0).Do(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, fmt.Errorf("following events: %s", resp.Status)
		}
		ev.mu.Lock()
		ev.conns++
		ev.mu.Unlock()
		return resp.Body, nil
	}
	body, err := connect()
	if err != nil {
		cancel()
		c.t.Fatalf("following events: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			sc := bufio.NewScanner(body)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				data, ok := strings.CutPrefix(sc.Text(), "data:")
				if !ok {
					continue
				}
				var it instanceItem
				if json.Unmarshal([]byte(strings.TrimSpace(data)), &it) == nil {
					ev.mu.Lock()
					ev.items = append(ev.items, it)
					ev.mu.Unlock()
				}
			}
			body.Close()
			for {
				if ctx.Err() != nil {
					return
				}
				if body, err = connect(); err == nil {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}()
	c.t.Cleanup(func() { cancel(); <-done })
	return ev
}

// connections is how many times the stream was (re)connected.
func (e *events) connections() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.conns
}

// saw reports whether an event showed instance id in status s.
func (e *events) saw(id string, s workload.Status) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, it := range e.items {
		if (it.ID == id || it.Value.ID == id) && it.Value.Status == s {
			return true
		}
	}
	return false
}

// statuses lists the statuses events showed for instance id, in order.
func (e *events) statuses(id string) []workload.Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []workload.Status
	for _, it := range e.items {
		if it.ID == id || it.Value.ID == id {
			out = append(out, it.Value.Status)
		}
	}
	return out
}

// runcContainer is one entry of `runc list --format json`.
type runcContainer struct {
	ID     string `json:"id"`
	Pid    int    `json:"pid"`
	Status string `json:"status"`
}

// runcList lists the containers of the node's runc root.
func runcList(n *node) ([]runcContainer, error) {
	if _, err := os.Stat(n.runcRoot()); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	out, err := exec.Command("runc", "--root", n.runcRoot(), "list", "--format", "json").Output()
	if err != nil {
		return nil, fmt.Errorf("runc list: %w", err)
	}
	var cs []runcContainer
	if s := strings.TrimSpace(string(out)); s != "" && s != "null" {
		if err := json.Unmarshal(out, &cs); err != nil {
			return nil, fmt.Errorf("runc list: %w: %s", err, out)
		}
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].ID < cs[j].ID })
	return cs, nil
}

// natRules returns the node's DNAT rules: `iptables -t nat -S` and rik's
// nftables port map (one element per mapping, commented with its
// instance id) when the node has one.
func natRules(n *node) (string, error) {
	ipt, err := n.ns.Exec(context.Background(), "iptables", "-w", "-t", "nat", "-S")
	if err != nil {
		return "", err
	}
	nft, err := n.ns.Exec(context.Background(), "nft", "list", "map", "ip", "rik", "ports")
	if err != nil && strings.Contains(nft, "No such file or directory") {
		nft, err = "", nil
	}
	return ipt + nft, err
}

// links returns the names of the node namespace's links.
func links(n *node) ([]string, error) {
	out, err := n.ns.Exec(context.Background(), "ip", "-o", "link", "show")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		names = append(names, name)
	}
	return names, nil
}

// processesMatching returns the PIDs whose command line contains s.
func processesMatching(s string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.Contains(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})), s) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// pathsContaining returns the paths under dir whose name contains s.
func pathsContaining(dir, s string) []string {
	var found []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if strings.Contains(d.Name(), s) {
			found = append(found, p)
		}
		return nil
	})
	return found
}

// cleanupNode removes what a node may leave behind once its riklet is
// dead: runc containers, VMs and other processes using its state
// directory, and mounts under it.
func cleanupNode(t testing.TB, n *node) {
	if cs, err := runcList(n); err == nil {
		for _, ctr := range cs {
			if out, err := exec.Command("runc", "--root", n.runcRoot(), "delete", "-f", ctr.ID).CombinedOutput(); err != nil {
				t.Logf("cleanup: runc delete %s: %v: %s", ctr.ID, err, out)
			}
		}
	}
	for _, pid := range processesMatching(n.stateDir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	unmountUnder(t, n.stateDir)
	removeCgroupParent(t, n.cgroupParent)
}

// removeCgroupParent removes the node's (by then empty) cgroup parent from
// every cgroup hierarchy, deepest directories first.
func removeCgroupParent(t testing.TB, parent string) {
	if parent == "" {
		return
	}
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", parent))
	if d := filepath.Join("/sys/fs/cgroup", parent); isDir(d) {
		dirs = append(dirs, d) // cgroup v2
	}
	for _, root := range dirs {
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

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// unmountUnder lazily unmounts every mount point under dir, deepest first.
func unmountUnder(t testing.TB, dir string) {
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
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	for _, mp := range mps {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Logf("cleanup: unmounting %s: %v", mp, err)
		}
	}
}

// removeAll removes the test's work directory, unmounting what is left.
// RIK_E2E_KEEP=1 keeps the logs and state of a failed test.
func removeAll(t testing.TB, dir string) {
	unmountUnder(t, dir)
	if t.Failed() && os.Getenv("RIK_E2E_KEEP") == "1" {
		t.Logf("RIK_E2E_KEEP=1: keeping %s", dir)
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Errorf("removing %s: %v", dir, err)
	}
}
