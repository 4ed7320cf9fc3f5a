package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/workload"
)

// probedPod is a pod running busybox httpd on :80 after script (sh), with
// the given container healthcheck (JSON).
func probedPod(name, image, policy, script, healthcheck string) string {
	return fmt.Sprintf(`{
  "apiVersion": "v1", "kind": "Pod", "name": %q, "restartPolicy": %q,
  "spec": {"containers": [{
    "name": "web", "image": %q,
    "command": ["/bin/sh", "-c"],
    "args": [%q],
    "ports": [{"targetPort": 80}],
    "healthcheck": %s
  }]}
}`, name, policy, image, script+"\nexec httpd -f -p 80 -h /www", healthcheck)
}

// seen reports whether the event stream showed instance name in a state
// matching ok.
func (e *events) seen(name string, ok func(workload.Instance) bool) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, it := range e.items {
		if it.Name == name && ok(it.Value) {
			return true
		}
	}
	return false
}

// TestHealthChecks is issue 10's health checks with the real binaries: a
// pod with a readiness probe runs unready, then becomes ready once its
// check passes (READY in the API and rikctl); a pod whose liveness probe
// starts failing after start is restarted with the reason in the API, or
// ends FAILED with it under restartPolicy Never.
func TestHealthChecks(t *testing.T) {
	c, _ := podCluster(t)
	ev := c.watchEvents()
	image := c.registry + "/busybox:latest"

	// Readiness: /ready.html appears 5 s after start.
	ready := c.writeFile("ready.json", probedPod("ready", image, "Always",
		"(sleep 5; echo ok > /www/ready.html) &",
		`{"readiness": {"http": {"path": "/ready.html", "port": 80}, "intervalSeconds": 1, "failureThreshold": 1}}`))
	// Liveness: /alive.html goes away 3 s after start.
	const sickScript = "echo ok > /www/alive.html; (sleep 3; rm /www/alive.html) &"
	liveness := `{"liveness": {"http": {"path": "/alive.html", "port": 80}, "intervalSeconds": 1, "failureThreshold": 2}}`
	sick := c.writeFile("sick.json", probedPod("sick", image, "Always", sickScript, liveness))
	never := c.writeFile("never.json", probedPod("never", image, "Never", sickScript, liveness))
	for _, def := range []string{ready, sick, never} {
		c.mustRikctl("create", "workload", "-f", def)
	}
	for _, name := range []string{"ready", "sick", "never"} {
		c.mustRikctl("create", "instance", "--workload-id", name, "--name", name+"-0")
	}

	c.eventually(90*time.Second, "ready-0 ready", func() error {
		it, ok, err := c.instance("ready-0")
		if err != nil || !ok {
			return fmt.Errorf("ready-0 listed %v: %v", ok, err)
		}
		if it.Value.Status != workload.StatusRunning || !it.Value.Ready {
			return fmt.Errorf("ready-0 %s ready=%v", it.Value.Status, it.Value.Ready)
		}
		return nil
	})
	if !ev.seen("ready-0", func(i workload.Instance) bool { return i.Status == workload.StatusRunning && !i.Ready }) {
		t.Error("ready-0 was never seen RUNNING and unready before its readiness probe passed")
	}
	out := c.mustRikctl("get", "instance", "ready-0")
	if !strings.Contains(out, "READY") || !strings.Contains(out, " true ") {
		t.Errorf("rikctl get instance ready-0 does not show it ready:\n%s", out)
	}

	// Restarted after its liveness probe failed, the reason in the API.
	c.eventually(90*time.Second, "sick-0 restarted by its liveness probe", func() error {
		it, ok, err := c.instance("sick-0")
		if err != nil || !ok {
			return fmt.Errorf("sick-0 listed %v: %v", ok, err)
		}
		if it.Value.Restarts < 1 {
			return fmt.Errorf("sick-0 %s, %d restarts", it.Value.Status, it.Value.Restarts)
		}
		return nil
	})
	c.eventually(10*time.Second, "sick-0 restart reason seen", func() error {
		if !ev.seen("sick-0", func(i workload.Instance) bool {
			return i.Reason == api.ReasonLivenessProbeFailed && i.Status == workload.StatusCreating &&
				strings.HasPrefix(i.Message, "liveness probe failed: container web: http GET http://") &&
				strings.Contains(i.Message, "/alive.html: status 404")
		}) {
			return fmt.Errorf("no CREATING(%s) status with the probe's detail", api.ReasonLivenessProbeFailed)
		}
		return nil
	})

	// Never: it ends FAILED, with the reason.
	failed := c.waitStatus("never-0", workload.StatusFailed, 90*time.Second)
	if failed.Value.Reason != api.ReasonLivenessProbeFailed || !strings.HasPrefix(failed.Value.Message, "liveness probe failed: ") ||
		failed.Value.Restarts != 0 || failed.Value.Ready {
		t.Errorf("never-0 ended %+v, want FAILED(%s) without restart", failed.Value, api.ReasonLivenessProbeFailed)
	}

	for _, name := range []string{"ready-0", "sick-0", "never-0"} {
		c.mustRikctl("delete", "instance", name)
	}
	for _, name := range []string{"ready-0", "sick-0", "never-0"} {
		c.waitGone(name, 60*time.Second)
	}
}
