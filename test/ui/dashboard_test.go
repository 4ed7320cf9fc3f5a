// Package ui_test drives the dashboard in headless Chromium against a whole
// cluster in this process (rik dev with a fake runtime): no root needed.
package ui_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/rikctl"
)

func ptr[T any](v T) *T { return &v }

const webPod = `{"apiVersion":"v1","kind":"Pod","name":"web","restartPolicy":"Never",
 "spec":{"containers":[{"name":"c","image":"example/web:1","resources":{"cpu":250,"memory":64}}]}}`

// A definition as a user pastes it, first with a mistake.
const pastedYAML = `apiVersion: v1
kind: Pod
name: from-ui
spec:
  containers:
    - name: app
      image: example/app:2
      env:
        - name: GREETING
          value: hello
      resources:
        cpu: 100
        memory: 32
`

// The dashboard: sign in with a token, see the node, see an instance
// created through the API turn RUNNING without a reload, follow its logs,
// delete it after confirming, create a workload from pasted YAML.
func TestDashboard(t *testing.T) {
	b := newBrowser(t)
	c := startCluster(t, false)
	ctx := context.Background()
	ui := c.url + "/ui/"

	// The first paint of a first visit, for the log (BenchmarkFirstPaint
	// measures it properly). The page asks for a token: without one the API
	// answers 401.
	fcp, err := firstPaint(b.ctx, ui)
	if err != nil {
		t.Fatalf("loading %s: %v", ui, err)
	}
	t.Logf("first contentful paint: %v", fcp)

	// Sign in: a wrong token is refused, the admin token accepted.
	b.do("sign-in form", chromedp.WaitVisible(chromedp.CSS("#signin #token")))
	b.shot("signin")
	b.do("wrong token", chromedp.SendKeys(chromedp.CSS("#token"), "rik_not-a-token"), chromedp.Click(chromedp.CSS(`#signin button[type="submit"]`)))
	b.until("wrong token refused", `(document.querySelector('#signin .error') || {}).textContent === 'This token is not valid.'`)
	b.do("right token", chromedp.SetValue(chromedp.CSS("#token"), c.token), chromedp.Click(chromedp.CSS(`#signin button[type="submit"]`)))

	// The node, Ready, with its capacity.
	b.do("node shown", chromedp.WaitVisible(chromedp.CSS(`tr[data-name="`+nodeName+`"] .badge[data-status="Ready"]`)))
	if row := b.text(`tr[data-name="` + nodeName + `"]`); !strings.Contains(row, "allocated") || !strings.Contains(row, "pod") {
		t.Errorf("node row: %q", row)
	}
	b.until("token in this tab only", js(`sessionStorage.getItem('rik.token') === %q && localStorage.length === 0`, c.token))
	b.until("event stream live", `document.getElementById('live')?.textContent === 'live'`)
	b.shot("nodes")
	run(b, "mark the page", chromedp.Evaluate[bool](`window.rikNoReload = true`))

	// An instance created through the API shows up and turns RUNNING.
	b.do("instances page", chromedp.Click(chromedp.CSS(`nav a[data-page="instances"]`)),
		chromedp.WaitVisible(chromedp.CSS(`main table`)))
	wl, err := c.api.CreateWorkload(ctx, []byte(webPod))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.api.CreateInstances(ctx, api.CreateInstancesRequest{WorkloadID: wl.ID, Replicas: ptr(2)}); err != nil {
		t.Fatal(err)
	}
	made, err := c.api.CreateInstances(ctx, api.CreateInstancesRequest{WorkloadID: wl.ID, Name: ptr("web-ui")})
	if err != nil {
		t.Fatal(err)
	}
	id := made[0].ID
	row := `tr[data-id="` + id + `"]`
	b.do("instance RUNNING", chromedp.WaitVisible(chromedp.CSS(row+` .badge[data-status="RUNNING"]`)))
	b.until("all three RUNNING", `document.querySelectorAll('main tbody .badge[data-status="RUNNING"]').length === 3`)
	b.until("no reload", `window.rikNoReload === true`)
	if got := b.text(row); !strings.Contains(got, "web-ui") || !strings.Contains(got, nodeName) {
		t.Errorf("instance row: %q", got)
	}
	b.shot("instances")

	// Its page: details, what the stream said, logs followed.
	b.do("instance page", chromedp.Click(chromedp.CSS(row+` a`)))
	b.until("logs shown", `!!document.getElementById('logs')?.textContent.includes('web-ui line 3\n')`)
	b.until("RUNNING among its events", `!!document.querySelector('table.events .badge[data-status="RUNNING"]')`)
	select {
	case c.lines <- "a line written after the page opened\n":
	case <-time.After(10 * time.Second):
		t.Fatal("nobody follows the logs")
	}
	b.until("followed line shown", `!!document.getElementById('logs')?.textContent.endsWith('a line written after the page opened\n')`)
	b.shot("instance")

	// Delete: nothing happens without confirming; once confirmed the
	// instance goes, from the API and from the list.
	b.do("delete, cancel", chromedp.Click(chromedp.CSS("#delete")), chromedp.WaitVisible(chromedp.CSS("dialog#confirm[open]")),
		chromedp.Click(chromedp.CSS("#confirm-cancel")), chromedp.WaitNotPresent(chromedp.CSS("dialog#confirm[open]")))
	if in, err := c.api.GetInstance(ctx, id); err != nil || in.Value.Status != "RUNNING" {
		t.Fatalf("after cancelling the delete: %+v %v", in, err)
	}
	b.do("delete", chromedp.Click(chromedp.CSS("#delete")), chromedp.WaitVisible(chromedp.CSS("dialog#confirm[open]")))
	question := b.text("#confirm-text")
	b.do("confirm", chromedp.Click(chromedp.CSS("#confirm-ok")), chromedp.WaitNotPresent(chromedp.CSS("dialog#confirm[open]")))
	if !strings.Contains(question, "web-ui") {
		t.Errorf("confirmation asks %q", question)
	}
	b.until("deleted, said", `document.getElementById('flash').textContent !== ''`)
	if said := b.text("#flash"); !strings.Contains(said, "is being deleted") {
		t.Fatalf("after confirming the delete: %q", said)
	}
	b.until("back to the list", `location.hash === '#/instances'`)
	b.until("instance gone from the list", js(`!document.querySelector('tr[data-id=%q]') && !!document.querySelector('main tbody')`, id))
	eventually(t, 10*time.Second, "instance gone from the API", func() error {
		_, err := c.api.GetInstance(ctx, id)
		var apiErr *rikctl.APIError
		if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusNotFound {
			return nil
		}
		return errors.New("still there")
	})

	// Create from pasted YAML: a mistake is shown with its field path, the
	// fixed definition is created with an instance, which runs.
	b.do("create page", chromedp.Click(chromedp.CSS(`nav a[data-page="create"]`)),
		chromedp.WaitVisible(chromedp.CSS("#definition")),
		chromedp.SetValue(chromedp.CSS("#definition"), strings.Replace(pastedYAML, "image:", "imgae:", 1)),
		chromedp.Click(chromedp.CSS(`#create button[type="submit"]`)))
	b.until("mistake shown", `(document.querySelector('#create .error') || {}).textContent?.includes('spec.containers[0].imgae')`)
	b.do("fixed definition", chromedp.SetValue(chromedp.CSS("#definition"), pastedYAML))
	b.shot("create")
	b.do("create", chromedp.Click(chromedp.CSS(`#create button[type="submit"]`)))
	b.until("its instance runs", `location.hash === '#/instances' && [...document.querySelectorAll('main tbody tr')].some(
		(r) => r.textContent.includes('from-ui') && r.querySelector('[data-status="RUNNING"]'))`)
	ws, err := c.api.ListWorkloads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(ws, func(w rikctl.WorkloadItem) bool { return w.Name == "from-ui" }) {
		t.Errorf("workloads after creating from the page: %+v", ws)
	}

	b.do("workloads page", chromedp.Click(chromedp.CSS(`nav a[data-page="workloads"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-id="`+wl.ID+`"]`)))
	b.until("instance counts", `[...document.querySelectorAll('main td.count')].map((td) => td.textContent).sort().join() === '1 running / 1,2 running / 2'`)
	b.shot("workloads")
	b.until("still no reload", `window.rikNoReload === true`)

	b.checkFaults()
}

// A controller started with --insecure asks for no token: the dashboard
// shows the node at once, and offers no sign-out.
func TestDashboardInsecure(t *testing.T) {
	b := newBrowser(t)
	c := startCluster(t, true)
	if !strings.HasPrefix(c.url, "http://") {
		t.Fatalf("insecure rik dev serves %s", c.url)
	}
	b.do("dashboard", chromedp.Navigate(c.url+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-name="`+nodeName+`"] .badge[data-status="Ready"]`)))
	b.until("live, no sign-in", `document.getElementById('live')?.textContent === 'live' &&
		!document.getElementById('signin') && document.getElementById('signout').hidden`)
	b.checkFaults()
}
