package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rik-org/rik/api/proto/commonpb"
)

// watcher is a `rikctl get ... -w` process and what it printed.
type watcher struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	errs bytes.Buffer
	done chan struct{}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// watch starts rikctl with args in the client namespace, until the test
// ends.
func (c *cluster) watch(args ...string) *watcher {
	c.t.Helper()
	full := append([]string{"--net=" + c.client.Path, "--", c.bins.rikctl, "--server", c.apiURL()}, args...)
	w := &watcher{cmd: exec.Command("nsenter", full...), done: make(chan struct{})}
	w.cmd.Env = append(os.Environ(), "RIKCONFIG="+c.api.rikctlConfig, "RIK_TOKEN="+c.api.token)
	w.cmd.Stdout, w.cmd.Stderr = lockedWriter{&w.mu, &w.out}, lockedWriter{&w.mu, &w.errs}
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := startOnSpawner(w.cmd); err != nil {
		c.t.Fatal(err)
	}
	go func() { _ = w.cmd.Wait(); close(w.done) }()
	c.t.Cleanup(func() {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		<-w.done
	})
	return w
}

func (w *watcher) output() (stdout, stderr string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.out.String(), w.errs.String()
}

// lines are the lines printed so far.
func (w *watcher) lines() []string {
	out, _ := w.output()
	return strings.Split(strings.TrimSuffix(out, "\n"), "\n")
}

// waitLine waits until a line printed after the first skip ones has every
// field of want (split on spaces).
func (c *cluster) waitLine(w *watcher, what string, skip int, want ...string) {
	c.t.Helper()
	c.eventually(60*time.Second, what, func() error {
		select {
		case <-w.done:
			out, errs := w.output()
			c.t.Fatalf("%s: watcher exited: %s\n%s", what, errs, out)
		default:
		}
		lines := w.lines()
		for _, l := range lines[min(skip, len(lines)):] {
			if hasFields(l, want...) {
				return nil
			}
		}
		out, errs := w.output()
		return fmt.Errorf("no line with %q in:\n%s%s", want, out, errs)
	})
}

// hasFields reports whether line's fields start with want.
func hasFields(line string, want ...string) bool {
	f := strings.Fields(line)
	if len(f) < len(want) {
		return false
	}
	for i, w := range want {
		if f[i] != w && !(w == "*") {
			return false
		}
	}
	return true
}

// TestWatchSurvivesControllerRestart: `rikctl get instances -w` and
// `get workloads -w` keep going across a controller restart: they
// reconnect, resume from the last event id, and print what happened after
// the restart, each change once, aligned with the header.
func TestWatchSurvivesControllerRestart(t *testing.T) {
	requireHost(t)
	c := newCluster(t, clusterOptions{insecure: true})
	w, err := registerWorker(t, c.dialFrom(c.attach("rik-worker", "172.31.0.70"), workersAddr, plaintext()), "rik-worker", "pod")
	if err != nil {
		t.Fatal(err)
	}
	c.mustRikctl("create", "workload", "-f", c.writeFile("web.json", bigPod("web")))
	c.mustRikctl("create", "instance", "--workload-id", "web", "--name", "web-0")
	order := w.expectOrder(commonpb.WorkloadRequestKind_CREATE)
	insts := c.watch("get", "instances", "-w")
	wls := c.watch("get", "workloads", "-w")
	c.waitLine(wls, "web listed", 0, "web", "pod")
	c.waitLine(insts, "web-0 listed", 0, "web-0", "web", "*")

	// Restart the controller; what follows happens after it.
	before := map[*watcher]int{insts: len(insts.lines()), wls: len(wls.lines())}
	c.controller.kill(syscall.SIGTERM)
	c.controller.start(t)
	c.eventually(30*time.Second, "controller back", func() error {
		_, err := c.get(c.client, c.apiURL()+"/healthz")
		return err
	})
	if err := w.report("", order.GetInstanceId(), commonpb.ResourceStatus_RUNNING); err != nil {
		t.Fatal(err)
	}
	c.mustRikctl("create", "workload", "-f", c.writeFile("api.json", bigPod("api")))
	c.waitLine(insts, "web-0 RUNNING after the restart", before[insts], "web-0", "web", "RUNNING", "*", "rik-worker")
	c.waitLine(wls, "api created after the restart", before[wls], "api", "pod")
	c.mustRikctl("delete", "workload", "api")
	c.waitLine(wls, "api deleted after the restart", before[wls], "api", "(deleted)", "pod")

	for _, wt := range []*watcher{insts, wls} {
		out, errs := wt.output()
		t.Logf("watcher printed:\n%s%s", out, errs)
		if !strings.Contains(errs, "reconnecting") {
			t.Errorf("watcher did not say it reconnected: %q", errs)
		}
		lines := wt.lines()
		seen := map[string]bool{}
		for _, l := range lines {
			if seen[l] {
				t.Errorf("line printed twice: %q", l)
			}
			seen[l] = true
		}
		// Aligned: every row's second column starts under the header's.
		col := strings.Index(lines[0], "  ") + strings.Index(lines[0][strings.Index(lines[0], "  "):], strings.Fields(lines[0])[1])
		for _, l := range lines[1:] {
			if len(l) < col || l[col-1] != ' ' || l[col] == ' ' {
				t.Errorf("row not aligned with the header (column at %d):\n%s\n%s", col, lines[0], l)
			}
		}
	}
}
