package service

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/rik-org/rik/internal/controller/reconcile"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/store/bolt"
	"github.com/rik-org/rik/internal/store/etcd"
	"github.com/rik-org/rik/internal/store/etcd/etcdtest"
	"github.com/rik-org/rik/internal/workload"
)

// BenchmarkReconcilePass measures one reconciler pass in steady state
// (nothing to do) with 10,000 instances in the store: "managed" has them
// in 10 managed workloads of 1,000 replicas (every record read, decoded
// and planned), "unmanaged" has them unmanaged (a pass reads only the
// managed records).
//
//	go test -run '^$' -bench ReconcilePass ./internal/controller/service/
func BenchmarkReconcilePass(b *testing.B) {
	backends := map[string]func(b *testing.B) store.Store{
		"bolt": func(b *testing.B) store.Store {
			st, err := bolt.Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			return st
		},
		"etcd": func(b *testing.B) store.Store {
			st, err := etcd.Open(b.Context(), []string{etcdtest.Start(b)})
			if err != nil {
				b.Fatal(err)
			}
			return st
		},
	}
	for _, backend := range []string{"bolt", "etcd"} {
		for _, managed := range []bool{true, false} {
			name := backend + "/unmanaged/10000"
			if managed {
				name = backend + "/managed/10000"
			}
			b.Run(name, func(b *testing.B) {
				st := backends[backend](b)
				b.Cleanup(func() { st.Close() })
				f := newFixtureOn(b, st)
				benchManaged(b, f, managed, 10, 1000)
				rec := reconcile.New(reconcile.Config{Cluster: f.s.Cluster(), Leader: f.leader, Now: f.clock.Now})
				if err := rec.Pass(b.Context()); err != nil { // records the Complete states
					b.Fatal(err)
				}
				b.ReportAllocs()
				for b.Loop() {
					if err := rec.Pass(b.Context()); err != nil {
						b.Fatal(err)
					}
				}
				if n := len(f.sched.orders); n != 0 {
					b.Fatalf("steady state sent %d orders", n)
				}
			})
		}
	}
}

// benchManaged stores workloads web-0..web-{wls-1}, each with per RUNNING
// and ready instances (records written directly); managed ones are
// applied first (revision 1), unmanaged ones created.
func benchManaged(b *testing.B, f *fixture, managed bool, wls, per int) {
	ctx := b.Context()
	for w := range wls {
		name := fmt.Sprintf("web-%d", w)
		def := fmt.Appendf(nil, `{"kind":"Pod","name":%q,"replicas":%d,"spec":{"containers":[{"name":"c","image":"nginx"}]}}`, name, per)
		var wl WorkloadRecord
		if managed {
			res, err := f.s.Apply(ctx, def)
			if err != nil {
				b.Fatal(err)
			}
			wl = res.Workload
		} else {
			var err error
			if wl, err = f.s.CreateWorkload(ctx, def); err != nil {
				b.Fatal(err)
			}
		}
		rev := 0
		if managed {
			rev = 1
		}
		now := f.clock.Now()
		for i := range per {
			id := fmt.Sprintf("%s-%05d", name, i)
			data, _ := json.Marshal(InstanceRecord{ID: id, Name: id, Value: workload.Instance{
				ID: id, Name: id, WorkloadID: wl.ID, WorkloadName: name, Kind: workload.KindPod, Revision: rev,
				Status: workload.StatusRunning, Ready: true, Node: "node1", IP: "10.63.0.2",
				CreatedAt: now, UpdatedAt: now}})
			if _, err := f.st.Put(ctx, instanceKey(workload.KindPod, id), data, store.Any); err != nil {
				b.Fatal(err)
			}
		}
	}
	if managed {
		if r, err := f.s.Rollouts(ctx); err != nil || len(r) != wls || r[0].Ready != per {
			b.Fatalf("rollouts %v, %v", r, err)
		}
	}
}
