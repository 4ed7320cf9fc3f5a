package service

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/errdefs"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/store/bolt"
	"github.com/rik-org/rik/internal/workload"
)

// Two controllers on one store updating the same instance concurrently must
// not lose updates (compare-and-set).
func TestUpdateInstanceCAS(t *testing.T) {
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	a, b := newRepo(st), newRepo(st)
	rec := InstanceRecord{ID: "id-1", Name: "web-aaaaa", Value: workload.Instance{ID: "id-1", Name: "web-aaaaa", Kind: workload.KindPod}}
	if err := a.createInstance(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := b.createInstance(ctx, rec); !errors.Is(err, errdefs.ErrAlreadyExists) || err.Error() != `instance "web-aaaaa": name already taken` {
		t.Fatalf("second create of the same name: %v", err)
	}
	var wg sync.WaitGroup
	for _, r := range []*repo{a, b} {
		wg.Go(func() {
			for range 50 {
				_, _, err := r.updateInstance(ctx, "id-1", func(i *workload.Instance) (store.Change, error) {
					i.Restarts++
					return store.Write, nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	got, _, err := a.findInstanceByID(ctx, "id-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Value.Restarts != 100 {
		t.Errorf("restarts = %d after 100 concurrent increments", got.Value.Restarts)
	}
}

// The id indexes of the repo must not keep deleted records: one entry per
// workload or instance ever created (here, or by another controller sharing
// the store) is unbounded growth.
func TestRepoIndexesForgetDeletedRecords(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	for i := range 3 {
		wl := f.workload(fmt.Sprintf("idx%d", i))
		if err := f.s.DeleteWorkload(ctx, wl.ID); err != nil {
			t.Fatal(err)
		}
	}
	r := f.s.repo
	n := r.workloads.len()
	if n != 0 {
		t.Errorf("workload index holds %d deleted workloads", n)
	}

	// Instances removed behind this controller's back (another controller).
	wl := f.workload("idx")
	for _, in := range f.instances(wl.ID, 3) {
		if err := f.st.Delete(ctx, instanceKey(in.Value.Kind, in.Name), store.Any); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.s.ListInstances(ctx); err != nil {
		t.Fatal(err)
	}
	n = r.instances.len()
	if n != 0 {
		t.Errorf("instance index holds %d deleted instances after a full listing", n)
	}
}

// An instance is found by name or id, through the index or, for one
// another controller created, a listing; a workload likewise.
func TestRepoFinds(t *testing.T) {
	a := newFixture(t)
	b := newFixtureOn(t, a.st) // another controller on the store
	ctx := t.Context()
	wl := a.workload("web")
	in := a.instances("web", 1)[0]
	for _, ref := range []string{in.ID, in.Name} {
		for _, f := range []*fixture{a, b} {
			if got, err := f.s.GetInstance(ctx, ref); err != nil || got.ID != in.ID {
				t.Errorf("GetInstance(%s): %+v %v", ref, got, err)
			}
		}
	}
	for _, ref := range []string{wl.ID, "web"} {
		if got, err := b.s.WorkloadInstances(ctx, ref); err != nil || len(got) != 1 {
			t.Errorf("WorkloadInstances(%s): %+v %v", ref, got, err)
		}
	}
	for _, ref := range []string{"nope", "../web", "", in.ID + "x"} {
		_, err := b.s.GetInstance(ctx, ref)
		if !errors.Is(err, errdefs.ErrNotFound) || err.Error() != fmt.Sprintf("instance %q: not found", ref) {
			t.Errorf("GetInstance(%q): %v", ref, err)
		}
	}
	// A record removed and another of the same name created: the old id
	// is not found at the name's key.
	if err := a.s.DeleteInstance(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	a.s.Ingest(ctx, Status{InstanceID: in.ID, Status: workload.StatusTerminated})
	name := in.Name
	again, err := a.s.CreateInstances(ctx, api.CreateInstancesRequest{WorkloadID: "web", Name: &name})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.s.GetInstance(ctx, in.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("old id after its name was reused: %v", err)
	}
	if got, err := b.s.GetInstance(ctx, name); err != nil || got.ID != again[0].ID {
		t.Errorf("name reused: %+v %v", got, err)
	}
}
