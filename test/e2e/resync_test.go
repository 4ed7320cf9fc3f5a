package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/testutil"
	"github.com/rik-org/rik/internal/workload"
)

// Environment of TestFailoverAtScale:
//   - RIK_E2E_SCALE_INSTANCES: instances created (default 5000);
//   - RIK_E2E_SCALE_WATCH: how long the survivor is watched after the
//     takeover (a Go duration, default 60s; the figure is 5m).
const (
	defaultScaleInstances = 5000
	defaultScaleWatch     = 60 * time.Second
	// takeoverBound defines failure only: the figure is logged.
	takeoverBound = 15 * time.Second
	// storedBound bounds how long a new instance's first status may take
	// to be stored after the takeover (failure only; logged).
	storedBound = 15 * time.Second
)

// startEtcdCluster starts an etcd cluster of n members in the ctl
// namespace and returns the RIK_STORE naming every member.
func (c *cluster) startEtcdCluster(n int) string {
	c.t.Helper()
	testutil.RequireTool(c.t, "etcd")
	var initial, endpoints []string
	url := func(port int) string { return "http://" + net.JoinHostPort(ctlIP, strconv.Itoa(port)) }
	for i := range n {
		initial = append(initial, fmt.Sprintf("e%d=%s", i, url(etcdPort+1+100*i)))
		endpoints = append(endpoints, net.JoinHostPort(ctlIP, strconv.Itoa(etcdPort+100*i)))
	}
	for i := range n {
		c.startProc(fmt.Sprintf("etcd-%d", i), c.ctl, "etcd", nil,
			"--name", fmt.Sprintf("e%d", i), "--data-dir", filepath.Join(c.dir, fmt.Sprintf("etcd-%d", i)),
			"--listen-client-urls", url(etcdPort+100*i), "--advertise-client-urls", url(etcdPort+100*i),
			"--listen-peer-urls", url(etcdPort+1+100*i), "--initial-advertise-peer-urls", url(etcdPort+1+100*i),
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "rik-e2e")
	}
	return "etcd://" + strings.Join(endpoints, ",")
}

// TestFailoverAtScale is issue 10's control-plane scale test: two
// controllers on a 3-member etcd with thousands of PENDING instances (no
// riklet). The lease holder is killed with SIGKILL: the survivor takes the
// lease over (the time is logged), stays subscribed to the scheduler for
// the whole watch (its subscribe counter does not move: a resumed stream
// is not replayed in full, and a slow controller is never dropped), and
// stores a new instance's first status promptly. The CPU the survivor and
// etcd burn while idle is logged.
func TestFailoverAtScale(t *testing.T) {
	requireHost(t, "etcd")
	total := envInt(t, "RIK_E2E_SCALE_INSTANCES", defaultScaleInstances)
	watch := envDuration(t, "RIK_E2E_SCALE_WATCH", defaultScaleWatch)
	// Thousands of PENDING instances: no quota (the controllers inherit
	// the test's environment).
	t.Setenv("RIK_MAX_PENDING", "0")
	t.Setenv("RIK_MAX_INSTANCES", "0")
	c := newCluster(t, clusterOptions{etcdMembers: 3})
	const portB = apiPort + 1
	c.addController(portB)
	ports := []int{apiPort, portB}

	if err := c.post("/api/v0/workloads.create", json.RawMessage(httpdPod("load", "busybox:latest", "load", "Always", 0)), nil); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	c.createMany("load", total)
	created := time.Since(started)
	t.Logf("created %d instances on etcd in %s: %.0f instances/s", total, created.Round(time.Millisecond), float64(total)/created.Seconds())
	c.eventually(5*time.Minute, "every instance's scheduler answer stored", func() error {
		n, err := c.answered()
		if err != nil {
			return err
		}
		if n < total {
			return fmt.Errorf("%d of %d instances answered", n, total)
		}
		return nil
	})
	t.Logf("every status stored %s after the first create", time.Since(started).Round(time.Millisecond))

	leader, survivor := c.leaderOf(ports)
	t.Logf("controller on :%d holds the lease", leader)
	c.procNamed(fmt.Sprintf("controller-%d", leader)).kill(syscall.SIGKILL)
	killed := time.Now()
	c.eventually(takeoverBound, "the survivor takes the lease over", func() error {
		if h := c.health(survivor); !h.Leader {
			return fmt.Errorf("survivor :%d not leader yet", survivor)
		}
		return nil
	})
	t.Logf("lease taken over %s after the holder was killed", time.Since(killed).Round(10*time.Millisecond))

	c.server = c.controllerURL(survivor)
	if err := c.post("/api/v0/instances.create", map[string]any{"workload_id": "load", "name": "after-failover"}, nil); err != nil {
		t.Fatal(err)
	}
	asked := time.Now()
	c.eventually(storedBound, "the new instance's scheduler answer stored", func() error {
		it, err := c.getInstance("after-failover")
		if err != nil {
			return err
		}
		if it.Value.Status != workload.StatusPending || it.Value.Reason == "" {
			return fmt.Errorf("status %s, reason %q", it.Value.Status, it.Value.Reason)
		}
		return nil
	})
	t.Logf("new instance's first status stored %s after its create", time.Since(asked).Round(10*time.Millisecond))

	// Let the takeover's resubscribe happen, then watch.
	time.Sleep(2 * time.Second)
	before := c.subscribes(survivor)
	cpu0 := c.cpuOf(append(c.etcdProcs(), c.procNamed(fmt.Sprintf("controller-%d", survivor))))
	time.Sleep(watch)
	cpu := c.cpuOf(append(c.etcdProcs(), c.procNamed(fmt.Sprintf("controller-%d", survivor)))) - cpu0
	if after := c.subscribes(survivor); after != before {
		t.Errorf("survivor subscribed %d more times during %s: its stream broke", after-before, watch)
	}
	if h := c.health(survivor); h.Scheduler != "connected" || !h.Leader {
		t.Errorf("survivor health %+v at the end, want connected leader", h)
	}
	t.Logf("idle for %s: controller + 3 etcd members used %s CPU (%.1f%% of one core)", watch, cpu.Round(time.Millisecond), 100*cpu.Seconds()/watch.Seconds())
}

// createMany creates n instances of wl, 100 per request, 8 requests at
// a time.
func (c *cluster) createMany(wl string, n int) {
	c.t.Helper()
	const per, parallel = 100, 8
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for left := n; left > 0; left -= per {
		count := min(per, left)
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := c.post("/api/v0/instances.create", map[string]any{"workload_id": wl, "replicas": count}, nil); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		c.t.Fatal(firstErr)
	}
}

// answered counts the instances whose scheduler answer is stored (a
// PENDING instance the scheduler could not place has its reason).
func (c *cluster) answered() (int, error) {
	body, err := c.getLong(c.apiURL() + "/api/v0/instances.list")
	if err != nil {
		return 0, err
	}
	var items []instanceItem
	if err := json.Unmarshal([]byte(body), &items); err != nil {
		return 0, fmt.Errorf("decoding instances.list: %w", err)
	}
	n := 0
	for _, it := range items {
		if it.Value.Reason != "" {
			n++
		}
	}
	return n, nil
}

// getLong is get with a timeout fit for large listings.
func (c *cluster) getLong(url string) (string, error) {
	resp, err := c.apiClient(c.client, time.Minute).Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b strings.Builder
	if _, err := bufio.NewReader(resp.Body).WriteTo(&b); err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, b.String())
	}
	return b.String(), nil
}

// getInstance reads one instance through the API.
func (c *cluster) getInstance(name string) (instanceItem, error) {
	body, err := c.get(c.client, c.apiURL()+"/api/v0/instances.get/"+name)
	if err != nil {
		return instanceItem{}, err
	}
	var it instanceItem
	if err := json.Unmarshal([]byte(body), &it); err != nil {
		return it, fmt.Errorf("decoding instance %s: %w: %s", name, err, body)
	}
	return it, nil
}

// healthState is a controller's /healthz.
type healthState struct {
	Scheduler string `json:"scheduler"`
	Leader    bool   `json:"leader"`
}

func (c *cluster) health(port int) healthState {
	c.t.Helper()
	var h healthState
	body, err := c.get(c.client, c.controllerURL(port)+"/healthz")
	if err == nil {
		err = json.Unmarshal([]byte(body), &h)
	}
	if err != nil {
		c.t.Logf("healthz of :%d: %v", port, err)
	}
	return h
}

// leaderOf waits until exactly one of the controllers holds the lease and
// returns its port and the other's.
func (c *cluster) leaderOf(ports []int) (leader, other int) {
	c.t.Helper()
	c.eventually(30*time.Second, "one leader", func() error {
		var leaders []int
		for _, p := range ports {
			if c.health(p).Leader {
				leaders = append(leaders, p)
			}
		}
		if len(leaders) != 1 {
			return fmt.Errorf("leaders: %v", leaders)
		}
		leader, other = leaders[0], ports[0]+ports[1]-leaders[0]
		return nil
	})
	return leader, other
}

// subscribes reads the controller's rik_controller_scheduler_subscribes_total.
func (c *cluster) subscribes(port int) int {
	c.t.Helper()
	body, err := c.get(c.client, c.controllerURL(port)+"/metrics")
	if err != nil {
		c.t.Fatal(err)
	}
	for line := range strings.SplitSeq(body, "\n") {
		if v, ok := strings.CutPrefix(line, "rik_controller_scheduler_subscribes_total "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				c.t.Fatalf("metric %q: %v", line, err)
			}
			return int(n)
		}
	}
	c.t.Fatalf("no rik_controller_scheduler_subscribes_total in the metrics of :%d", port)
	return 0
}

func (c *cluster) procNamed(name string) *proc {
	c.t.Helper()
	for _, p := range c.procs {
		if p.name == name {
			return p
		}
	}
	c.t.Fatalf("no process %s", name)
	return nil
}

func (c *cluster) etcdProcs() []*proc {
	var out []*proc
	for _, p := range c.procs {
		if strings.HasPrefix(p.name, "etcd") {
			out = append(out, p)
		}
	}
	return out
}

// cpuOf is the CPU time (user + system) the processes used so far.
func (c *cluster) cpuOf(ps []*proc) time.Duration {
	c.t.Helper()
	var total time.Duration
	for _, p := range ps {
		p.mu.Lock()
		pid := p.cmd.Process.Pid
		p.mu.Unlock()
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			c.t.Fatalf("CPU of %s: %v", p.name, err)
		}
		// Fields after the command (which may hold spaces) start after ")".
		fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		utime, _ := strconv.ParseInt(fields[11], 10, 64)
		stime, _ := strconv.ParseInt(fields[12], 10, 64)
		total += time.Duration(utime+stime) * time.Second / 100 // USER_HZ
	}
	return total
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration", name, v)
	}
	return d
}
