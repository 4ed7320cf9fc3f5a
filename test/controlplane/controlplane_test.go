// Package controlplane tests the whole control plane in one process: the
// real controller, scheduler and riklet agents over real gRPC and HTTP on
// loopback, with a stateful fake runtime on each node. It needs no root.
package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/controller"
	"github.com/rik-org/rik/internal/pki"
	"github.com/rik-org/rik/internal/rikctl"
	"github.com/rik-org/rik/internal/riklet"
	"github.com/rik-org/rik/internal/riklet/runtime/runtimetest"
	"github.com/rik-org/rik/internal/scheduler"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/store/bolt"
	"github.com/rik-org/rik/internal/workload"
)

const nodeTimeout = 1500 * time.Millisecond

// proc is one running component: cancel it and wait for it to return.
type proc struct {
	cancel context.CancelFunc
	done   chan error
}

func start(t testing.TB, name string, f func(ctx context.Context) error) *proc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &proc{cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- f(ctx) }()
	t.Cleanup(func() { p.stop(t, name) })
	return p
}

func (p *proc) stop(t testing.TB, name string) {
	p.cancel()
	select {
	case err := <-p.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("%s returned %v", name, err)
		}
		p.done <- nil // later stops return at once
	case <-time.After(20 * time.Second):
		t.Errorf("%s did not stop within 20s", name)
	}
}

type cluster struct {
	t         testing.TB
	log       *slog.Logger
	st        store.Store
	schedAddr string // controllers
	workAddr  string // workers
	sched     *proc
	api       *rikctl.Client
	nodes     map[string]*proc
	dirs      map[string]string
}

func listen(t testing.TB, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	var err error
	// A restarted scheduler rebinds its old port; allow for TIME_WAIT races.
	for i := 0; i < 50; i++ {
		if l, err = net.Listen("tcp", addr); err == nil {
			return l
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("listening on %s: %v", addr, err)
	return nil
}

// freeAddr returns a loopback address nothing listens on (the scheduler must
// come back on the same addresses after a restart).
func freeAddr(t testing.TB) string {
	l := listen(t, "127.0.0.1:0")
	defer l.Close()
	return l.Addr().String()
}

func newCluster(t testing.TB, nodes ...string) *cluster {
	t.Helper()
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return newClusterOn(t, st, nodes...)
}

// newClusterOn starts a scheduler, a controller on st and a riklet per node.
func newClusterOn(t testing.TB, st store.Store, nodes ...string) *cluster {
	t.Helper()
	level := slog.LevelWarn
	if os.Getenv("RIK_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	c := &cluster{t: t, log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
		nodes: map[string]*proc{}, dirs: map[string]string{}, st: st}
	c.workAddr, c.schedAddr = freeAddr(t), freeAddr(t)
	c.startScheduler()

	c.api = c.startController(st)
	for _, n := range nodes {
		c.dirs[n] = t.TempDir()
		c.startNode(n)
	}
	c.eventually(10*time.Second, "nodes Ready", func() error {
		ns, err := c.api.ListNodes(context.Background())
		if err != nil {
			return err
		}
		ready := 0
		for _, n := range ns {
			if n.Value.Status == "Ready" {
				ready++
			}
		}
		if ready != len(nodes) {
			return fmt.Errorf("%d/%d nodes Ready: %+v", ready, len(nodes), ns)
		}
		return nil
	})
	return c
}

func ptr[T any](v T) *T { return &v }

// startController serves the API over HTTPS (a certificate from a test CA)
// with tokens, and returns a client with the first admin token.
func (c *cluster) startController(st store.Store) *rikctl.Client {
	c.t.Helper()
	ca, err := pki.Init(filepath.Join(c.t.TempDir(), "pki"), "")
	if err != nil {
		c.t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(pki.Template{Role: pki.RoleController, Name: "controller", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		c.t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		c.t.Fatal(err)
	}
	tokenFile := filepath.Join(c.t.TempDir(), "admin.token")
	api := listen(c.t, "127.0.0.1:0")
	start(c.t, "controller", func(ctx context.Context) error {
		return controller.Run(ctx, controller.Config{Listener: api, Store: st, SchedulerAddr: c.schedAddr,
			Logger: c.log.With("component", "controller"), AdminTokenFile: tokenFile,
			TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})
	})
	pool, err := pki.Pool(ca.CertPEM)
	if err != nil {
		c.t.Fatal(err)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	var token []byte
	c.eventually(10*time.Second, "admin token written", func() error {
		token, err = os.ReadFile(tokenFile)
		return err
	})
	url := "https://" + api.Addr().String()
	// Without the token the API answers nothing.
	c.eventually(10*time.Second, "API refuses a client without a token", func() error {
		_, err := rikctl.NewClient(url, hc).ListWorkloads(context.Background())
		var apiErr *rikctl.APIError
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized {
			return fmt.Errorf("without a token: %v", err)
		}
		return nil
	})
	return rikctl.NewClient(url, hc).WithToken(strings.TrimSpace(string(token)))
}

// startScheduler (re)starts the scheduler on the cluster's fixed addresses.
// The listeners are closed by scheduler.Run when it stops.
func (c *cluster) startScheduler() {
	wl, cl := listen(c.t, c.workAddr), listen(c.t, c.schedAddr)
	c.sched = start(c.t, "scheduler", func(ctx context.Context) error {
		return scheduler.Run(ctx, scheduler.Config{WorkersListener: wl, ControllersListener: cl,
			NodeTimeout: nodeTimeout, RecoveryWindow: nodeTimeout, NodeGoneAfter: 2 * nodeTimeout, Logger: c.log.With("component", "scheduler"), Insecure: true})
	})
}

func (c *cluster) startNode(name string) {
	dir := c.dirs[name]
	fa := &runtimetest.Factory{Kind: workload.KindPod, Dir: filepath.Join(dir, "fake")}
	c.nodes[name] = start(c.t, "riklet "+name, func(ctx context.Context) error {
		return riklet.Run(ctx, riklet.Config{MasterAddr: c.workAddr, Hostname: name,
			StateDir: filepath.Join(dir, "state"), Runtimes: []riklet.RuntimeFactory{fa.New},
			HeartbeatInterval: 200 * time.Millisecond, Logger: c.log.With("component", "riklet", "node", name), Insecure: true})
	})
}

func (c *cluster) eventually(timeout time.Duration, what string, f func() error) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("%s: not within %v: %v", what, timeout, err)
}

func (c *cluster) instances(workloadID string) map[string]workload.Instance {
	c.t.Helper()
	items, err := c.api.WorkloadInstances(context.Background(), workloadID)
	if err != nil {
		c.t.Fatalf("listing instances: %v", err)
	}
	out := map[string]workload.Instance{}
	for _, it := range items {
		out[it.Name] = it.Value
	}
	return out
}

// waitAll waits until every instance of the workload satisfies ok.
func (c *cluster) waitAll(workloadID string, n int, timeout time.Duration, what string, ok func(workload.Instance) bool) map[string]workload.Instance {
	c.t.Helper()
	var last map[string]workload.Instance
	c.eventually(timeout, what, func() error {
		last = c.instances(workloadID)
		if len(last) != n {
			return fmt.Errorf("%d instances, want %d: %+v", len(last), n, last)
		}
		for name, in := range last {
			if !ok(in) {
				return fmt.Errorf("%s is %s on %q (%s %s)", name, in.Status, in.Node, in.Reason, in.Message)
			}
		}
		return nil
	})
	return last
}

func running(in workload.Instance) bool { return in.Status == workload.StatusRunning }

const definition = `{"apiVersion":"v1","kind":"Pod","name":"web","restartPolicy":"Never",
 "spec":{"containers":[{"name":"c","image":"example/web:1","resources":{"cpu":100,"memory":64}}]}}`

func TestControlPlane(t *testing.T) {
	c := newCluster(t, "node-a", "node-b", "node-c")
	ctx := context.Background()

	wl, err := c.api.CreateWorkload(ctx, []byte(definition))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.api.CreateInstances(ctx, api.CreateInstancesRequest{WorkloadID: wl.ID, Replicas: ptr(3)}); err != nil {
		t.Fatal(err)
	}

	// Three instances RUNNING, spread one per node.
	got := c.waitAll(wl.ID, 3, 10*time.Second, "3 instances RUNNING", running)
	var nodes []string
	for _, in := range got {
		nodes = append(nodes, in.Node)
		if in.IP == "" {
			t.Errorf("instance %s has no IP", in.Name)
		}
	}
	sort.Strings(nodes)
	if strings.Join(nodes, ",") != "node-a,node-b,node-c" {
		t.Fatalf("instances placed on %v, want one per node", nodes)
	}

	// Node loss: node-b stops heartbeating; its instance is FAILED "node lost"
	// and, with restartPolicy Never, stays so.
	var onB string
	for name, in := range got {
		if in.Node == "node-b" {
			onB = name
		}
	}
	c.nodes["node-b"].stop(t, "riklet node-b")
	lostBy := time.Now().Add(nodeTimeout + 5*time.Second)
	c.eventually(time.Until(lostBy), "instance on node-b FAILED node lost", func() error {
		in := c.instances(wl.ID)[onB]
		if in.Status != workload.StatusFailed || in.Reason != api.ReasonNodeLost {
			return fmt.Errorf("%s is %s (%s)", onB, in.Status, in.Reason)
		}
		return nil
	})
	c.eventually(5*time.Second, "node-b NotReady", func() error {
		ns, err := c.api.ListNodes(ctx)
		if err != nil {
			return err
		}
		for _, n := range ns {
			if n.Name == "node-b" && n.Value.Status != "NotReady" {
				return fmt.Errorf("node-b is %s", n.Value.Status)
			}
		}
		return nil
	})

	// Scheduler restart: nodes re-register, the controller resubscribes;
	// nothing is lost and new work is placed.
	c.sched.stop(t, "scheduler")
	c.startScheduler()
	c.eventually(15*time.Second, "nodes re-registered", func() error {
		ns, err := c.api.ListNodes(ctx)
		if err != nil {
			return err
		}
		ready := map[string]bool{}
		for _, n := range ns {
			ready[n.Name] = n.Value.Status == "Ready"
		}
		if !ready["node-a"] || !ready["node-c"] {
			return fmt.Errorf("nodes after restart: %+v", ns)
		}
		return nil
	})
	after := c.instances(wl.ID)
	for name, in := range after {
		if name == onB {
			continue
		}
		if in.Status != workload.StatusRunning || in.Node != got[name].Node {
			t.Errorf("after scheduler restart %s is %s on %s, want RUNNING on %s", name, in.Status, in.Node, got[name].Node)
		}
	}
	if _, err := c.api.CreateInstances(ctx, api.CreateInstancesRequest{WorkloadID: wl.ID, Name: ptr("web-late")}); err != nil {
		t.Fatal(err)
	}
	c.eventually(10*time.Second, "new instance RUNNING after scheduler restart", func() error {
		in := c.instances(wl.ID)["web-late"]
		if in.Status != workload.StatusRunning {
			return fmt.Errorf("web-late is %s (%s %s)", in.Status, in.Reason, in.Message)
		}
		if in.Node == "node-b" {
			return fmt.Errorf("web-late placed on the lost node")
		}
		return nil
	})

	// Delete the workload: every instance is destroyed on its node and the
	// store ends up empty.
	if err := c.api.DeleteWorkload(ctx, wl.ID); err != nil {
		t.Fatal(err)
	}
	c.eventually(10*time.Second, "instances gone", func() error {
		items, err := c.api.ListInstances(ctx)
		if err != nil {
			return err
		}
		if len(items) != 0 {
			return fmt.Errorf("%d instances left: %+v", len(items), items)
		}
		return nil
	})
	for _, prefix := range []string{"/instance/", "/workload/"} {
		kvs, err := c.st.List(ctx, prefix)
		if err != nil {
			t.Fatal(err)
		}
		if len(kvs) != 0 {
			t.Errorf("store still holds %d keys under %s", len(kvs), prefix)
		}
	}
}

// A riklet restarted while its instances run adopts them: they stay RUNNING
// on the same node without being started again.
func TestRikletRestartAdopts(t *testing.T) {
	c := newCluster(t, "node-a")
	ctx := context.Background()
	wl, err := c.api.CreateWorkload(ctx, []byte(definition))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.api.CreateInstances(ctx, api.CreateInstancesRequest{WorkloadID: wl.ID, Replicas: ptr(2)}); err != nil {
		t.Fatal(err)
	}
	before := c.waitAll(wl.ID, 2, 10*time.Second, "2 instances RUNNING", running)
	c.nodes["node-a"].stop(t, "riklet node-a")
	c.startNode("node-a")
	after := c.waitAll(wl.ID, 2, 10*time.Second, "instances RUNNING after riklet restart", running)
	for name, in := range after {
		if in.Restarts != before[name].Restarts || in.IP != before[name].IP {
			t.Errorf("%s: restarts %d→%d, ip %s→%s; want it adopted as it was", name,
				before[name].Restarts, in.Restarts, before[name].IP, in.IP)
		}
	}
}
