package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/errdefs"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/store/bolt"
	"github.com/rik-org/rik/internal/workload"
)

func quotaFixture(t *testing.T, maxAll, maxPending int) *fixture {
	t.Helper()
	return newFixture(t, func(c *Config) { c.Admission.MaxInstances, c.Admission.MaxPending = maxAll, maxPending })
}

// create asks for n instances of ref; nil when created.
func (f *fixture) create(ref string, n int) error {
	_, err := f.s.CreateInstances(context.Background(), api.CreateInstancesRequest{WorkloadID: ref, Replicas: &n})
	return err
}

// refusedQuota checks that err is a quota refusal saying want.
func refusedQuota(t *testing.T, err error, want string) {
	t.Helper()
	if !errors.Is(err, errdefs.ErrResourceExhausted) || errdefs.HTTPStatus(err) != 429 || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want a quota refusal saying %q", err, want)
	}
}

func TestQuotaOnInstances(t *testing.T) {
	f := quotaFixture(t, 3, 0)
	wl := f.workload("web")
	f.instances(wl.ID, 2)
	err := f.create(wl.ID, 2)
	refusedQuota(t, err, "quota exceeded: 2 instances exist, 2 more would pass the cluster's cap of 3 instances")
	if err.Error() != "quota exceeded: 2 instances exist, 2 more would pass the cluster's cap of 3 instances" {
		t.Errorf("message %q", err)
	}
	third := f.instances(wl.ID, 1)[0]
	f.clock.Add(quotaRefresh) // the refusal is checked against the store, not just estimated
	refusedQuota(t, f.create(wl.ID, 1), "quota exceeded: 3 instances exist, 1 more would pass the cluster's cap of 3 instances")

	// A deleted instance makes room once its record is gone.
	if err := f.s.DeleteInstance(t.Context(), third.ID); err != nil {
		t.Fatal(err)
	}
	f.s.Ingest(t.Context(), Status{InstanceID: third.ID, Status: workload.StatusTerminated})
	if _, err := f.s.GetInstance(t.Context(), third.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("deleted instance after TERMINATED: %v", err)
	}
	refusedQuota(t, f.create(wl.ID, 1), "3 instances exist") // counted less than a second ago
	f.clock.Add(quotaRefresh)
	f.instances(wl.ID, 1)
	if insts, err := f.s.ListInstances(t.Context()); err != nil || len(insts) != 3 {
		t.Errorf("instances stored: %d, %v; want 3", len(insts), err)
	}
}

func TestQuotaOnPendingInstances(t *testing.T) {
	f := quotaFixture(t, 0, 2)
	wl := f.workload("web")
	in := f.instances(wl.ID, 2)
	refusedQuota(t, f.create(wl.ID, 1), "quota exceeded: 2 instances are PENDING, 1 more would pass the cluster's cap of 2 pending instances")
	// Placed instances are no longer pending: room again.
	for _, i := range in {
		f.s.Ingest(t.Context(), Status{InstanceID: i.ID, Status: workload.StatusRunning, Node: "n1"})
	}
	f.clock.Add(quotaRefresh)
	f.instances(wl.ID, 2)
	refusedQuota(t, f.create(wl.ID, 1), "2 instances are PENDING")
}

// The counts come from the store: instances another controller created
// count too once they are counted again.
func TestQuotaCountsTheStore(t *testing.T) {
	f := quotaFixture(t, 2, 0)
	wl := f.workload("web")
	f.instances(wl.ID, 1)
	for i := range 2 {
		inst := workload.Instance{ID: fmt.Sprintf("other-%d", i), Name: fmt.Sprintf("other-%d", i), WorkloadID: wl.ID, Kind: workload.KindPod, Status: workload.StatusRunning}
		data, _ := json.Marshal(InstanceRecord{ID: inst.ID, Name: inst.Name, Value: inst})
		if _, err := f.st.Put(t.Context(), instanceKey(workload.KindPod, inst.Name), data, store.Any); err != nil {
			t.Fatal(err)
		}
	}
	f.clock.Add(quotaRefresh)
	refusedQuota(t, f.create(wl.ID, 1), "3 instances exist")
}

// A definition stored before the policy (or under another one) is judged
// again when instances of it are created.
func TestAdmissionRechecksStoredDefinitions(t *testing.T) {
	f := newFixture(t)
	old := WorkloadRecord{ID: "old-id", Name: "old", Value: workload.Workload{
		APIVersion: "v1", Kind: workload.KindPod, Name: "old", Replicas: 1, RestartPolicy: workload.RestartAlways,
		Spec: workload.Spec{Containers: []workload.Container{{Name: "c", Image: "i", Ports: workload.PortList{{Port: 22, TargetPort: 22, Protocol: "TCP"}}}}},
	}}
	data, _ := json.Marshal(old)
	if _, err := f.st.Put(t.Context(), workloadKey(workload.KindPod, "old"), data, 0); err != nil {
		t.Fatal(err)
	}
	err := f.create("old", 1)
	if !errors.Is(err, errdefs.ErrInvalidArgument) || err.Error() != "workload old: spec.containers[0].ports[0].port: host port 22 is below 1024 (system ports)" {
		t.Errorf("instances of a stored definition with port 22: %v", err)
	}
	if insts, err := f.s.ListInstances(t.Context()); err != nil || len(insts) != 0 {
		t.Errorf("instances stored: %d, %v", len(insts), err)
	}
}

// BenchmarkQuotaRecount measures a quota check with n instances in the
// bolt store: "count" lists and counts them (done at most once a second),
// "estimate" is the check in between.
//
//	go test -run '^$' -bench QuotaRecount ./internal/controller/service/
func BenchmarkQuotaRecount(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		for _, recount := range []bool{true, false} {
			name := fmt.Sprintf("estimate/%d", n)
			if recount {
				name = fmt.Sprintf("count/%d", n)
			}
			b.Run(name, func(b *testing.B) {
				f := benchQuotaFixture(b, n)
				wl := WorkloadRecord{Name: "web", Value: workload.Workload{Kind: workload.KindPod, Name: "web",
					Spec: workload.Spec{Containers: []workload.Container{{Name: "c", Image: "i"}}}}}
				b.ReportAllocs()
				for b.Loop() {
					if recount {
						f.clock.Add(quotaRefresh)
					}
					if err := f.s.admitInstances(b.Context(), wl, 1); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// benchQuotaFixture is a service over a bolt store holding n instance
// records.
func benchQuotaFixture(b *testing.B, n int) *fixture {
	st, err := bolt.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	for i := range n {
		name := fmt.Sprintf("web-%05d", i)
		data, _ := json.Marshal(InstanceRecord{ID: name, Name: name, Value: workload.Instance{
			ID: name, Name: name, WorkloadID: "w", WorkloadName: "web", Kind: workload.KindPod,
			Status: workload.StatusRunning, Node: "node1", IP: "10.63.0.2", Message: "started"}})
		if _, err := st.Put(b.Context(), instanceKey(workload.KindPod, name), data, store.Any); err != nil {
			b.Fatal(err)
		}
	}
	return newFixtureOn(b, st, func(c *Config) { c.Admission.MaxInstances, c.Admission.MaxPending = 1<<30, 1<<30 })
}
