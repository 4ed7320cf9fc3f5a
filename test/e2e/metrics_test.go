package e2e

import (
	"time"

	"github.com/rik-org/rik/internal/testutil/promcheck"
)

// Default metrics addresses of the scheduler and the riklet (each in its
// own namespace here).
const (
	schedulerMetrics = "http://127.0.0.1:4997"
	rikletMetrics    = "http://127.0.0.1:4998"
)

// checkMetrics checks, once node n ran a pod, that the riklet's metrics
// show the pod's start, that the scheduler is ready, and that promtool
// accepts the /metrics of the controller, the scheduler and the riklet.
func (c *cluster) checkMetrics(n *node) {
	c.t.Helper()
	c.waitPage(n.ns, rikletMetrics+"/metrics", `rik_riklet_start_duration_seconds_count{kind="pod"} 1`, 10*time.Second)
	c.waitPage(n.ns, rikletMetrics+"/metrics", `rik_riklet_instances{kind="pod",state="RUNNING"} 1`, 10*time.Second)
	c.waitPage(c.ctl, schedulerMetrics+"/readyz", `"status":"ready"`, 10*time.Second)
	pages := map[string]string{}
	var err error
	if pages["riklet"], err = c.get(n.ns, rikletMetrics+"/metrics"); err != nil {
		c.t.Fatal(err)
	}
	if pages["scheduler"], err = c.get(c.ctl, schedulerMetrics+"/metrics"); err != nil {
		c.t.Fatal(err)
	}
	if pages["controller"], err = c.get(c.client, c.apiURL()+"/metrics"); err != nil {
		c.t.Fatal(err)
	}
	for name, body := range pages {
		c.t.Logf("promtool check metrics: %s", name)
		promcheck.Check(c.t, []byte(body))
	}
}
