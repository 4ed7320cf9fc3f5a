package service

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/controller/reconcile"
	"github.com/rik-org/rik/internal/errdefs"
	"github.com/rik-org/rik/internal/workload"
)

const managedJSON = `{"kind":"Pod","name":"web","replicas":%d,"spec":{"containers":[{"name":"web","image":%q}]}%s}`

func managedDef(replicas int, image, extra string) []byte {
	return fmt.Appendf(nil, managedJSON, replicas, image, extra)
}

// managedFixture is a fixture with a reconciler over its service.
type managedFixture struct {
	*fixture
	rec *reconcile.Reconciler
}

func newManagedFixture(t *testing.T, tune ...func(*Config)) *managedFixture {
	f := newFixture(t, tune...)
	return &managedFixture{fixture: f, rec: reconcile.New(reconcile.Config{Cluster: f.s.Cluster(), Leader: f.leader, Now: f.clock.Now})}
}

func (f *managedFixture) apply(def []byte) api.Applied[workload.Workload] {
	f.t.Helper()
	res, err := f.s.Apply(context.Background(), def)
	if err != nil {
		f.t.Fatal(err)
	}
	return res
}

func (f *managedFixture) pass() {
	f.t.Helper()
	if err := f.rec.Pass(context.Background()); err != nil {
		f.t.Fatal(err)
	}
}

// live lists the live instances of web (not deleted, not ended).
func (f *managedFixture) live() []workload.Instance {
	f.t.Helper()
	recs, err := f.s.WorkloadInstances(context.Background(), "web")
	if err != nil {
		f.t.Fatal(err)
	}
	var out []workload.Instance
	for _, r := range recs {
		if !r.Value.DeleteRequested && !r.Value.Status.Terminal() {
			out = append(out, r.Value)
		}
	}
	return out
}

// report makes the node report every instance of web: live ones RUNNING
// and ready (the workload has no readiness probe) unless broken (CREATING,
// backing off after an image pull failure), deleted ones TERMINATED.
func (f *managedFixture) report(notReady func(workload.Instance) bool) {
	f.t.Helper()
	recs, _ := f.s.WorkloadInstances(context.Background(), "web")
	for _, r := range recs {
		i := r.Value
		st := Status{InstanceID: i.ID, WorkloadID: i.WorkloadID, Node: "n1", Status: workload.StatusRunning, Ready: true}
		switch {
		case i.DeleteRequested:
			st.Status = workload.StatusTerminated
		case notReady != nil && notReady(i):
			st.Status, st.Ready, st.Reason, st.Message = workload.StatusCreating, false, api.ReasonImagePullFailed, "pulling nginx:broken: not found"
		}
		f.s.Ingest(context.Background(), st)
	}
}

func (f *managedFixture) rollout() api.Rollout {
	f.t.Helper()
	r, err := f.s.Rollout(context.Background(), "web")
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

func TestApplyKeepsReplicas(t *testing.T) {
	f := newManagedFixture(t)
	res := f.apply(managedDef(3, "nginx:1", ""))
	if !res.Created || !res.Changed || res.Revision != 1 {
		t.Fatalf("first apply: %+v", res)
	}
	if again := f.apply(managedDef(3, "nginx:1", "")); again.Created || again.Changed || again.Revision != 1 {
		t.Fatalf("identical apply made a change: %+v", again)
	}
	f.pass()
	live := f.live()
	if len(live) != 3 {
		t.Fatalf("%d live instances, want 3", len(live))
	}
	for _, i := range live {
		if i.Revision != 1 || !strings.HasPrefix(i.Name, "web-") {
			t.Errorf("instance %s revision %d", i.Name, i.Revision)
		}
		if n := len(f.sched.ordersFor(i.ID)); n != 1 {
			t.Errorf("instance %s: %d orders", i.Name, n)
		}
	}
	f.pass() // nothing new: no double create
	if n := len(f.live()); n != 3 {
		t.Fatalf("second pass: %d live", n)
	}
	f.report(nil)
	f.pass()
	if r := f.rollout(); r.Phase != api.RolloutComplete || r.Ready != 3 || r.UpToDate != 3 || r.Available != 3 {
		t.Fatalf("rollout %+v", r)
	}

	// Deleted by hand: replaced.
	if err := f.s.DeleteInstance(context.Background(), live[0].ID); err != nil {
		t.Fatal(err)
	}
	f.pass()
	if n := len(f.live()); n != 3 {
		t.Fatalf("after a delete by hand: %d live, want 3", n)
	}

	// Scale 3 -> 5 -> 0.
	if _, err := f.s.Scale(context.Background(), api.ScaleRequest{ID: "web", Replicas: intp(5)}); err != nil {
		t.Fatal(err)
	}
	f.pass()
	if n := len(f.live()); n != 5 {
		t.Fatalf("scaled to 5: %d live", n)
	}
	if h, _ := f.s.History(context.Background(), "web"); len(h) != 1 {
		t.Fatalf("scale made a revision: %d revisions", len(h))
	}
	if _, err := f.s.Scale(context.Background(), api.ScaleRequest{ID: "web", Replicas: intp(0)}); err != nil {
		t.Fatal(err)
	}
	f.pass()
	if n := len(f.live()); n != 0 {
		t.Fatalf("scaled to 0: %d live", n)
	}
}

func TestFailedInstanceReplacedAfterRetention(t *testing.T) {
	f := newManagedFixture(t)
	f.apply(managedDef(1, "nginx:1", ""))
	f.pass()
	first := f.live()[0]
	f.s.Ingest(context.Background(), Status{InstanceID: first.ID, Node: "n1", Status: workload.StatusFailed, Reason: api.ReasonStartFailed})
	f.pass()
	if live := f.live(); len(live) != 1 || live[0].ID == first.ID {
		t.Fatalf("failed instance not replaced: %v", live)
	}
	if _, err := f.s.GetInstance(context.Background(), first.ID); err != nil {
		t.Fatalf("failed instance removed before its retention: %v", err)
	}
	f.clock.Add(reconcile.FailedRetention)
	f.pass()
	if rec, err := f.s.GetInstance(context.Background(), first.ID); err == nil && !rec.Value.DeleteRequested {
		t.Fatalf("failed instance kept after its retention: %+v", rec.Value)
	}
}

func TestRollingUpdateAndUndo(t *testing.T) {
	f := newManagedFixture(t)
	f.apply(managedDef(3, "nginx:1", `,"update":{"progressDeadlineSeconds":60}`))
	f.pass()
	f.report(nil)
	f.pass()
	old := f.live()

	// A good new image: replaced one at a time, never fewer than 3 ready.
	if res := f.apply(managedDef(3, "nginx:2", `,"update":{"progressDeadlineSeconds":60}`)); res.Revision != 2 || !res.Changed {
		t.Fatalf("apply of a new image: %+v", res)
	}
	for pass := 0; ; pass++ {
		if pass > 20 {
			t.Fatal("rollout did not complete in 20 passes")
		}
		f.pass()
		f.report(nil)
		r := f.rollout()
		if r.Ready < 3 {
			t.Fatalf("pass %d: %d ready, want >= 3", pass, r.Ready)
		}
		if r.Instances > 4 {
			t.Fatalf("pass %d: %d live, want <= 4", pass, r.Instances)
		}
		if r.Phase == api.RolloutComplete {
			break
		}
	}
	for _, i := range f.live() {
		if i.Revision != 2 || slices.ContainsFunc(old, func(o workload.Instance) bool { return o.ID == i.ID }) {
			t.Fatalf("after the rollout: %s revision %d", i.Name, i.Revision)
		}
	}

	// A broken image: never ready; the rollout stops at its deadline and
	// the old ones keep serving.
	f.apply(managedDef(3, "nginx:broken", `,"update":{"progressDeadlineSeconds":60}`))
	broken := func(i workload.Instance) bool { return i.Revision == 3 }
	for range 3 {
		f.pass()
		f.report(broken)
	}
	f.clock.Add(2 * time.Minute)
	f.pass()
	r := f.rollout()
	if r.Phase != api.RolloutFailed || r.Reason != api.ReasonProgressDeadline || !strings.Contains(r.Message, "ImagePullFailed") {
		t.Fatalf("broken rollout: %+v", r)
	}
	if r.Ready != 3 {
		t.Fatalf("broken rollout: %d ready, want the 3 old ones", r.Ready)
	}
	f.pass()
	if n := len(f.live()); n != 4 {
		t.Fatalf("failed rollout went on: %d live", n)
	}

	// Undo: back to nginx:2 as revision 4; the old ones are current again.
	res, err := f.s.Undo(context.Background(), api.UndoRequest{ID: "web"})
	if err != nil || res.Revision != 4 || res.Workload.Value.Spec.Containers[0].Image != "nginx:2" {
		t.Fatalf("undo: %+v, %v", res, err)
	}
	f.pass()
	f.report(nil)
	f.pass()
	if r := f.rollout(); r.Phase != api.RolloutComplete || r.Instances != 3 || r.Revision != 4 {
		t.Fatalf("after undo: %+v", r)
	}
	h, err := f.s.History(context.Background(), "web")
	if err != nil || len(h) != 4 || h[3].Cause != "undo to revision 2" || !h[3].Current {
		t.Fatalf("history: %+v, %v", h, err)
	}
	if _, err := f.s.Undo(context.Background(), api.UndoRequest{ID: "web", Revision: 1}); err != nil {
		t.Fatalf("undo to revision 1: %v", err)
	}
	if _, err := f.s.Undo(context.Background(), api.UndoRequest{ID: "web", Revision: 99}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("undo to a missing revision: %v", err)
	}
}

func TestApplyErrors(t *testing.T) {
	f := newManagedFixture(t, func(c *Config) { c.Admission.MaxInstances = 5 })
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		def  []byte
		want string
	}{
		{"replicas above the cap", managedDef(6, "nginx", ""), "replicas: must be at most 5"},
		{"negative replicas", managedDef(-1, "nginx", ""), "replicas: must be between 0 and 1000"},
		{"no progress possible", managedDef(1, "nginx", `,"update":{"maxSurge":0,"maxUnavailable":0}`), "update: maxSurge and maxUnavailable cannot both be 0"},
	} {
		if _, err := f.s.Apply(ctx, tt.def); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
	f.workload("plain")
	if _, err := f.s.Scale(ctx, api.ScaleRequest{ID: "plain", Replicas: intp(2)}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("scale of an unmanaged workload: %v", err)
	}
	if _, err := f.s.Scale(ctx, api.ScaleRequest{ID: "nope", Replicas: intp(2)}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("scale of a missing workload: %v", err)
	}
	f.apply(managedDef(1, "nginx", ""))
	if _, err := f.s.Scale(ctx, api.ScaleRequest{ID: "web", Replicas: intp(6)}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("scale above the cap: %v", err)
	}
	if _, err := f.s.Undo(ctx, api.UndoRequest{ID: "web"}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("undo with one revision: %v", err)
	}
	if _, err := f.s.CreateInstances(ctx, api.CreateInstancesRequest{WorkloadID: "web"}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("instances.create of a managed workload: %v", err)
	}
	fn := `{"kind":"Function","name":"web","spec":{"function":{"execution":{"rootfs":"https://x/r.ext4"}}}}`
	if _, err := f.s.Apply(ctx, []byte(fn)); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "kind:") {
		t.Errorf("kind change: %v", err)
	}
}

// RIK's flow is untouched: workloads.create + instances.create make
// instances the reconciler leaves alone.
func TestUnmanagedLeftAlone(t *testing.T) {
	f := newManagedFixture(t)
	f.workload("plain")
	insts := f.instances("plain", 2)
	f.apply(managedDef(1, "nginx", "")) // another, managed
	f.pass()
	if err := f.s.DeleteInstance(context.Background(), insts[0].ID); err != nil {
		t.Fatal(err)
	}
	f.pass()
	recs, _ := f.s.WorkloadInstances(context.Background(), "plain")
	live := 0
	for _, r := range recs {
		if !r.Value.DeleteRequested {
			live++
		}
		if r.Value.Revision != 0 {
			t.Errorf("unmanaged instance with revision %d", r.Value.Revision)
		}
	}
	if live != 1 {
		t.Fatalf("unmanaged workload: %d live instances, want 1 (no replacement)", live)
	}
}

// Deleting a managed workload stops everything: nothing is replaced.
func TestDeleteManagedWorkload(t *testing.T) {
	f := newManagedFixture(t)
	f.apply(managedDef(2, "nginx", ""))
	f.pass()
	if err := f.s.DeleteWorkload(context.Background(), "web"); err != nil {
		t.Fatal(err)
	}
	f.pass()
	recs, _ := f.s.ListInstances(context.Background())
	for _, r := range recs {
		if !r.Value.DeleteRequested {
			t.Fatalf("instance %s left or created after the delete", r.Name)
		}
	}
	if n := len(recs); n != 2 {
		t.Fatalf("%d instances, want the 2 being deleted", n)
	}
	// Applied again under the same name: a fresh history.
	if res := f.apply(managedDef(1, "nginx", "")); res.Revision != 1 || !res.Created {
		t.Fatalf("re-created: %+v", res)
	}
}

// An old instance during a rollout is judged and re-sent by its own
// revision: no readiness probe in it means ready once RUNNING (even from a
// node that reports no readiness) although the new revision has one, and
// its CREATE carries the old image.
func TestOldRevisionKeepsItsDefinition(t *testing.T) {
	f := newManagedFixture(t)
	f.apply(managedDef(1, "nginx:1", ""))
	f.pass()
	f.report(nil)
	old := f.live()[0]
	probed := `{"kind":"Pod","name":"web","replicas":1,"spec":{"containers":[{"name":"web","image":"nginx:2","ports":[{"targetPort":80}],` +
		`"healthcheck":{"readiness":{"tcp":{"port":80}}}}]}}`
	f.apply([]byte(probed))
	f.pass()
	f.s.Ingest(context.Background(), Status{InstanceID: old.ID, Node: "n1", Status: workload.StatusRunning, Restarts: 1})
	for _, i := range f.live() {
		if i.ID != old.ID {
			f.s.Ingest(context.Background(), Status{InstanceID: i.ID, Node: "n2", Status: workload.StatusRunning})
		}
	}
	if r := f.rollout(); r.Ready != 1 || r.UpToDate != 1 || r.Available != 0 || r.Instances != 2 {
		t.Fatalf("want the old instance ready by its own revision, the new one not (its probe has not passed): %+v", r)
	}
	f.pass()
	if n := len(f.live()); n != 2 {
		t.Fatalf("the old instance was removed before the new one was ready: %d live", n)
	}
	if err := f.s.resend(context.Background(), func(workload.Instance, bool) bool { return true }); err != nil { // as on a subscribe
		t.Fatal(err)
	}
	orders := f.sched.ordersFor(old.ID)
	last := orders[len(orders)-1]
	if last.Action != Create || last.Definition.Spec.Containers[0].Image != "nginx:1" {
		t.Fatalf("old instance re-sent as %+v", last.Definition.Spec.Containers[0])
	}
}

// More missing replicas than the cap of PENDING instances leaves room for:
// a pass creates what fits, the next ones the rest as instances leave
// PENDING (before, a pass asked for all at once and created nothing).
func TestApplyAbovePendingCap(t *testing.T) {
	f := newManagedFixture(t, func(c *Config) { c.Admission.MaxPending = 4 })
	f.apply(managedDef(6, "nginx:1", ""))
	if err := f.rec.Pass(context.Background()); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("first pass: %v, want the cap reported", err)
	}
	if n := len(f.live()); n != 4 {
		t.Fatalf("first pass: %d live, want the 4 the cap allows", n)
	}
	f.report(nil)
	f.clock.Add(quotaRefresh) // counted again: 0 PENDING
	f.pass()
	if n := len(f.live()); n != 6 {
		t.Fatalf("second pass: %d live, want 6", n)
	}
}
