package chaos

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/rik-org/rik/internal/testutil"
	"github.com/rik-org/rik/internal/testutil/netns"
	"github.com/rik-org/rik/internal/testutil/ociimage"
	"github.com/rik-org/rik/internal/workload"
)

// ---- the API

// Item is an instance as the API lists it.
type Item struct {
	ID    string            `json:"id"`
	Name  string            `json:"name"`
	Value workload.Instance `json:"value"`
}

// NodeItem is a node as the API lists it.
type NodeItem struct {
	Name  string `json:"name"`
	Value struct {
		Status string `json:"status"`
	} `json:"value"`
}

func apiURL(path string) string {
	return "https://" + net.JoinHostPort(ctlIP, strconv.Itoa(apiPort)) + path
}

// call does one API request; a status other than want is an error.
func (c *Cluster) call(method, path string, body any, want int, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, apiURL(path), rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.api.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return &apiError{Code: resp.StatusCode, Body: strings.TrimSpace(string(b))}
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

type apiError struct {
	Code int
	Body string
}

func (e *apiError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Code, e.Body) }

// Instances lists the instances.
func (c *Cluster) Instances() ([]Item, error) {
	var items []Item
	err := c.call("GET", "/api/v0/instances.list", nil, 200, &items)
	return items, err
}

// NodesList lists the nodes.
func (c *Cluster) NodesList() ([]NodeItem, error) {
	var items []NodeItem
	err := c.call("GET", "/api/v0/nodes.list", nil, 200, &items)
	return items, err
}

// CreateWorkload creates a workload from its JSON definition (409: exists).
func (c *Cluster) CreateWorkload(def string) error {
	err := c.call("POST", "/api/v0/workloads.create", json.RawMessage(def), 201, nil)
	if ae, ok := err.(*apiError); ok && ae.Code == 409 {
		return nil
	}
	return err
}

// CreateInstance creates instance name of workload wl.
func (c *Cluster) CreateInstance(wl, name string) error {
	return c.call("POST", "/api/v0/instances.create", map[string]any{"workload_id": wl, "name": name}, 201, nil)
}

// DeleteInstance deletes instance id (404: already gone, not an error).
func (c *Cluster) DeleteInstance(id string) error {
	err := c.call("POST", "/api/v0/instances.delete", map[string]string{"id": id}, 204, nil)
	if ae, ok := err.(*apiError); ok && ae.Code == 404 {
		return nil
	}
	return err
}

// WaitReady waits until every node is Ready.
func (c *Cluster) WaitReady(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := c.nodesReady()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.DumpLogs(60)
			c.t.Fatalf("nodes not ready after %s: %v", timeout, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (c *Cluster) nodesReady() error {
	items, err := c.NodesList()
	if err != nil {
		return err
	}
	ready := map[string]bool{}
	for _, it := range items {
		ready[it.Name] = it.Value.Status == "Ready"
	}
	for _, n := range c.Nodes {
		if !ready[n.Name] {
			return fmt.Errorf("%s not Ready (nodes %+v)", n.Name, items)
		}
	}
	return nil
}

// Get fetches url from inside ns.
func Get(ns *netns.NS, url string) (string, error) {
	resp, err := nsClient(ns, 3*time.Second).Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return string(b), fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), nil
}

// ---- workloads

// PodDef is a busybox httpd pod, restartPolicy Always; hostPort > 0
// exposes it on its node.
func PodDef(name, image string, hostPort int) string {
	ports := ""
	if hostPort > 0 {
		ports = fmt.Sprintf(`, "ports": [{"port": %d, "targetPort": 80}]`, hostPort)
	}
	return fmt.Sprintf(`{"apiVersion": "v1", "kind": "Pod", "name": %q, "restartPolicy": "Always",
  "spec": {"containers": [{"name": "web", "image": %q, "command": ["/bin/sh", "-c"],
    "args": ["exec httpd -f -p 80 -h /www"]%s}]}}`, name, image, ports)
}

// FunctionDef is a Function booting rootfs, exposing its port 80 on hostPort.
func FunctionDef(name, rootfs string, hostPort int) string {
	return fmt.Sprintf(`{"apiVersion": "v1", "kind": "Function", "name": %q, "restartPolicy": "Always",
  "spec": {"function": {"execution": {"rootfs": %q, "vcpus": 1, "memory": 128},
    "exposure": [{"port": %d, "targetPort": 80}]}}}`, name, rootfs, hostPort)
}

// serveRegistry serves the busybox image from ns; it returns host:port.
func serveRegistry(t testing.TB, ns *netns.NS) string {
	t.Helper()
	testutil.RequireFile(t, ociimage.BusyboxPath)
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	push := httptest.NewServer(h)
	t.Cleanup(push.Close)
	img, err := ociimage.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	(&ociimage.Registry{Host: strings.TrimPrefix(push.URL, "http://")}).Push(t, "busybox:latest", img)
	return serveIn(t, ns, h)
}

// serveRootfs serves a guest rootfs (busybox httpd as init) from ns.
func serveRootfs(t testing.TB, ns *netns.NS) string {
	t.Helper()
	rootfs := guestRootfs(t)
	addr := serveIn(t, ns, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/gzip")
		_, _ = w.Write(rootfs)
	}))
	return "http://" + addr + "/rootfs.tar.gz"
}

func serveIn(t testing.TB, ns *netns.NS, h http.Handler) string {
	t.Helper()
	var ln net.Listener
	must(t, ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort(ctlIP, "0"))
		return err
	}))
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func guestRootfs(t testing.TB) []byte {
	t.Helper()
	bin, err := os.ReadFile(ociimage.BusyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	add := func(hdr *tar.Header, body []byte) {
		hdr.Size = int64(len(body))
		must(t, tw.WriteHeader(hdr))
		_, err := tw.Write(body)
		must(t, err)
	}
	for _, d := range []string{"bin", "sbin", "etc", "tmp", "www", "proc", "sys", "dev"} {
		add(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	}
	add(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755}, bin)
	for _, a := range []string{"sh", "httpd"} {
		add(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}, nil)
	}
	add(&tar.Header{Name: "sbin/init", Typeflag: tar.TypeReg, Mode: 0o755}, []byte("#!/bin/sh\nexec /bin/httpd -f -p 80 -h /www\n"))
	add(&tar.Header{Name: "www/index.html", Typeflag: tar.TypeReg, Mode: 0o644}, []byte("hello from rik\n"))
	must(t, tw.Close())
	must(t, zw.Close())
	return buf.Bytes()
}

// ---- a node's real state

// NodeState is what a node really holds, each set keyed by instance id
// (runc containers and cgroups by the id they belong to).
type NodeState struct {
	Containers map[string]bool // running runc containers
	Stopped    map[string]bool // runc containers not running
	VMs        map[string]bool // QEMU processes
	Leases     map[string]bool // pod and function address leases
	LeaseIPs   map[string]string
	Netns      map[string]bool // pod network namespace files
	Veths      map[string]bool // host-side pod veths (by name)
	Taps       map[string]bool // function TAPs (by name)
	DNAT       map[string]bool // instance ids named by DNAT rules
	Cgroups    map[string]bool // pod cgroups under the node's parent
	Ledger     map[string]string
	Chains     bool // RIKLET chains exist
	Bridge     bool // the pod bridge exists
}

// Observe reads node n's real state.
func Observe(n *Node) (NodeState, error) {
	s := NodeState{Containers: map[string]bool{}, Stopped: map[string]bool{}, VMs: map[string]bool{},
		Leases: map[string]bool{}, LeaseIPs: map[string]string{}, Netns: map[string]bool{}, Veths: map[string]bool{},
		Taps: map[string]bool{}, DNAT: map[string]bool{}, Cgroups: map[string]bool{}, Ledger: map[string]string{}}
	cs, err := runcList(n)
	if err != nil {
		return s, err
	}
	for _, c := range cs {
		id := strings.TrimSuffix(c.ID, "-web")
		if c.Status == "running" {
			s.Containers[id] = true
		} else {
			s.Stopped[id] = true
		}
	}
	for _, pid := range processesMatching(filepath.Join(n.StateDir, "functions")) {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.HasPrefix(string(b), "qemu") {
			s.VMs[strconv.Itoa(pid)] = true
		}
	}
	for _, f := range []string{filepath.Join(n.StateDir, "pods", "net", "ipam.json"), filepath.Join(n.StateDir, "sdn", "leases.json")} {
		var l struct {
			Leases map[string]string `json:"leases"`
		}
		if b, err := os.ReadFile(f); err == nil && json.Unmarshal(b, &l) == nil {
			for id, ip := range l.Leases {
				s.Leases[id] = true
				s.LeaseIPs[id] = ip
			}
		}
	}
	ents, _ := os.ReadDir(filepath.Join(n.StateDir, "pods", "net", "netns"))
	for _, e := range ents {
		s.Netns[e.Name()] = true
	}
	if err := observeNetwork(n, &s); err != nil {
		return s, err
	}
	for _, root := range cgroupRoots(n.CgroupParent) {
		ents, _ := os.ReadDir(root)
		for _, e := range ents {
			// _functions is the parent of the VMs' cgroups (runtimes'
			// sandbox), not a pod's: VMs are observed as QEMU processes.
			if e.IsDir() && e.Name() != "_functions" {
				s.Cgroups[e.Name()] = true
			}
		}
	}
	return s, observeLedger(n, &s)
}

// observeNetwork reads the node's links and nat rules.
func observeNetwork(n *Node, s *NodeState) error {
	out, err := n.NS.Exec(context.Background(), "ip", "-o", "link", "show")
	if err != nil {
		return err
	}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		switch {
		case strings.HasPrefix(name, "rikp"):
			s.Veths[name] = true
		case name == "rik0":
			s.Bridge = true
		case strings.HasPrefix(name, "rik") && len(name) == 13:
			s.Taps[name] = true
		}
	}
	rules, err := n.NS.Exec(context.Background(), "iptables", "-w", "-t", "nat", "-S")
	if err != nil {
		return err
	}
	for _, r := range strings.Split(rules, "\n") {
		if strings.Contains(r, "RIKLET") {
			s.Chains = true
		}
		if strings.Contains(r, "-j DNAT") {
			if _, rest, ok := strings.Cut(r, "--comment "); ok {
				s.DNAT[strings.TrimPrefix(strings.Trim(strings.Fields(rest)[0], `"`), "rik:")] = true
			} else {
				s.DNAT[r] = true
			}
		}
	}
	// The nftables backend: rik's table, one port map element per
	// mapping, commented with its instance id.
	ports, err := n.NS.Exec(context.Background(), "nft", "list", "map", "ip", "rik", "ports")
	if err != nil {
		if strings.Contains(ports, "No such file or directory") {
			return nil
		}
		return err
	}
	s.Chains = true
	for _, m := range nftOwner.FindAllStringSubmatch(ports, -1) {
		s.DNAT[m[1]] = true
	}
	return nil
}

var nftOwner = regexp.MustCompile(`comment "([^"]+)"`)

// observeLedger reads the riklet's ledger.
func observeLedger(n *Node, s *NodeState) error {
	var l struct {
		Instances []struct {
			InstanceID string `json:"instanceId"`
			Last       struct {
				Status string `json:"status"`
			} `json:"last"`
		} `json:"instances"`
	}
	if b, err := os.ReadFile(filepath.Join(n.StateDir, "ledger.json")); err == nil {
		if err := json.Unmarshal(b, &l); err != nil {
			return fmt.Errorf("ledger: %w", err)
		}
	}
	for _, e := range l.Instances {
		s.Ledger[e.InstanceID] = e.Last.Status
	}
	return nil
}

type runcContainer struct {
	ID     string `json:"id"`
	Pid    int    `json:"pid"`
	Status string `json:"status"`
}

func runcList(n *Node) ([]runcContainer, error) {
	if _, err := os.Stat(n.RuncRoot()); os.IsNotExist(err) {
		return nil, nil
	}
	out, err := exec.Command("runc", "--root", n.RuncRoot(), "list", "--format", "json").Output()
	if err != nil {
		return nil, fmt.Errorf("runc list: %w", err)
	}
	var cs []runcContainer
	if s := strings.TrimSpace(string(out)); s != "" && s != "null" {
		if err := json.Unmarshal(out, &cs); err != nil {
			return nil, fmt.Errorf("runc list: %w", err)
		}
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].ID < cs[j].ID })
	return cs, nil
}

// cgroupRoots are the node's cgroup parent directories (v2, or each v1
// hierarchy).
func cgroupRoots(parent string) []string {
	if parent == "" {
		return nil
	}
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", parent))
	if fi, err := os.Stat(filepath.Join("/sys/fs/cgroup", parent)); err == nil && fi.IsDir() {
		dirs = append(dirs, filepath.Join("/sys/fs/cgroup", parent))
	}
	return dirs
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
