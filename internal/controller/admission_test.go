package controller

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/store/bolt"
	"github.com/rik-org/rik/internal/workload"
)

// withoutQuotas turns the instance caps off (tests that need many PENDING
// instances).
func withoutQuotas(c *Config) {
	a := DefaultAdmission()
	a.MaxInstances, a.MaxPending = 0, 0
	c.Admission = &a
}

// withHugeQuotas keeps the caps (and their counting) on, out of reach.
func withHugeQuotas(c *Config) {
	a := DefaultAdmission()
	a.MaxInstances, a.MaxPending = 1<<30, 1<<30
	c.Admission = &a
}

// The hostile inputs of issue 7, through the HTTP API: each refused with
// its status and the exact field path and reason.
func TestAdmissionRefusesHostileInputs(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Addr = "127.0.0.1:15400" })
	_, schedPort, _ := net.SplitHostPort(e.sched.addr)
	pod := func(container string) string {
		return `{"kind":"Pod","name":"p","spec":{"containers":[` + container + `]}}`
	}
	fn := func(execution string) string {
		return `{"kind":"Function","name":"f","spec":{"function":{"execution":` + execution + `}}}`
	}
	tests := []struct {
		name string
		body string
		code int
		want string // the whole error
	}{
		{"rootfs file:///etc/shadow", fn(`{"rootfs":"file:///etc/shadow"}`), 400,
			"spec.function.execution.rootfs: file:// only under /var/lib/rik/rootfs on this cluster"},
		{"rootfs escaping the directory", fn(`{"rootfs":"file:///var/lib/rik/rootfs/../../../etc/shadow"}`), 400,
			"spec.function.execution.rootfs: file:// only under /var/lib/rik/rootfs on this cluster"},
		{"rootfs at the metadata address", fn(`{"rootfs":"http://169.254.169.254/latest/meta-data/"}`), 400,
			"spec.function.execution.rootfs: 169.254.169.254 is a link-local address: not allowed"},
		{"rootfs at the metadata name", fn(`{"rootfs":"http://metadata.google.internal/computeMetadata/v1/"}`), 400,
			"spec.function.execution.rootfs: metadata.google.internal is a cloud metadata name: not allowed"},
		{"host port 22", pod(`{"name":"c","image":"i","ports":[{"port":22,"targetPort":22}]}`), 400,
			"spec.containers[0].ports[0].port: host port 22 is below 1024 (system ports)"},
		{"host port 4995", pod(`{"name":"c","image":"i","ports":{"port":4995}}`), 400,
			"spec.containers[0].ports[0].port: host port 4995 is used by rik"},
		{"host port 5000 of a function", fn(`{"rootfs":"http://example.com/r"},"exposure":[{"port":5000,"targetPort":80}]`), 400,
			"spec.function.exposure[0].port: host port 5000 is used by rik"},
		{"the controller's own port", pod(`{"name":"c","image":"i","ports":{"port":15400}}`), 400,
			"spec.containers[0].ports[0].port: host port 15400 is reserved"},
		{"the scheduler's port", pod(`{"name":"c","image":"i","ports":{"port":` + schedPort + `}}`), 400,
			"spec.containers[0].ports[0].port: host port " + schedPort + " is reserved"},
		{"unknown field", pod(`{"name":"c","image":"i","resource":{"cpu":100,"memory":64}}`), 400,
			`spec.containers[0].resource: unknown field, did you mean "resources"?`},
		{"field given twice", pod(`{"name":"c","image":"i","image":"j"}`), 400,
			"spec.containers[0].image: given twice"},
		{"reserved kernel arg", fn(`{"rootfs":"http://example.com/r","kernelArgs":"quiet init=/bin/sh"}`), 400,
			`spec.function.execution.kernelArgs: "init=/bin/sh" is reserved (rik sets it)`},
		{"reserved kernel arg in quotes", fn(`{"rootfs":"http://example.com/r","kernelArgs":"\"rik.ip\"=\"10.0.0.9/30\""}`), 400,
			`spec.function.execution.kernelArgs: "rik.ip=10.0.0.9/30" is reserved (rik sets it)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do("POST", "/api/v0/workloads.create", tt.body)
			if r.code != tt.code {
				t.Fatalf("code = %d (%s), want %d", r.code, r.body, tt.code)
			}
			if got := r.errorText(t); got != tt.want {
				t.Errorf("error = %q\n want %q", got, tt.want)
			}
		})
	}
	var list []workloadRecord
	e.must(200, "GET", "/api/v0/workloads.list", nil).decode(t, &list)
	if len(list) != 0 {
		t.Errorf("refused definitions were stored: %+v", list)
	}
}

// What the controller stores and sends is the admitted definition: a
// container without resources gets the cluster's defaults, which
// placement counts.
func TestAdmissionDefaultsResources(t *testing.T) {
	a := DefaultAdmission()
	a.Policy.DefaultCPU, a.Policy.DefaultMemory = 200, 64
	e := newEnv(t, func(c *Config) { c.Admission = &a })
	rec := e.createWorkload(podDef("web"))
	want := &workload.Resources{CPU: 200, Memory: 64}
	if got := rec.Value.Spec.Containers[0].Resources; got == nil || *got != *want {
		t.Fatalf("stored resources = %+v, want %+v", got, want)
	}
	in := e.createInstances(map[string]any{"workload_id": "web"})[0]
	order := e.waitOrders(in.ID, 1)[0]
	sent, err := workload.Parse([]byte(order.GetDefinition()))
	if err != nil {
		t.Fatalf("definition sent: %v", err)
	}
	if cpu, mem := sent.Requests(); cpu != 200 || mem != 64 {
		t.Errorf("definition sent asks for %d millicores, %d MiB; want 200, 64", cpu, mem)
	}
}

// A definition stored before the policy (or under another one) is judged
// again when instances of it are created.
func TestAdmissionRechecksStoredDefinitions(t *testing.T) {
	e := newEnv(t)
	old := workloadRecord{ID: "old-id", Name: "old", Value: workload.Workload{
		APIVersion: "v1", Kind: workload.KindPod, Name: "old", Replicas: 1, RestartPolicy: workload.RestartAlways,
		Spec: workload.Spec{Containers: []workload.Container{{Name: "c", Image: "i", Ports: workload.PortList{{Port: 22, TargetPort: 22, Protocol: "TCP"}}}}},
	}}
	data, _ := json.Marshal(old)
	if _, err := e.st.Put(t.Context(), workloadKey(workload.KindPod, "old"), data, 0); err != nil {
		t.Fatal(err)
	}
	r := e.do("POST", "/api/v0/instances.create", map[string]any{"workload_id": "old"})
	if r.code != 400 || r.errorText(t) != "workload old: spec.containers[0].ports[0].port: host port 22 is below 1024 (system ports)" {
		t.Errorf("instances.create of a stored definition with port 22: %d %s", r.code, r.body)
	}
	insts, _, err := e.s.repo.listInstances(t.Context())
	if err != nil || len(insts) != 0 {
		t.Errorf("instances stored: %d, %v", len(insts), err)
	}
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func quotaEnv(t *testing.T, maxAll, maxPending int) (*env, *fakeClock) {
	t.Helper()
	clock := &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	a := DefaultAdmission()
	a.MaxInstances, a.MaxPending = maxAll, maxPending
	e := newEnvTuned(t, func(s *Server) { s.now = clock.Now }, func(c *Config) { c.Admission = &a })
	return e, clock
}

func TestQuotaOnInstances(t *testing.T) {
	e, clock := quotaEnv(t, 3, 0)
	wl := e.createWorkload(podDef("web"))
	e.createInstances(map[string]any{"workload_id": wl.ID, "replicas": 2})
	r := e.do("POST", "/api/v0/instances.create", map[string]any{"workload_id": wl.ID, "replicas": 2})
	if r.code != http.StatusTooManyRequests || r.hdr.Get("Content-Type") != "application/json" ||
		r.errorText(t) != "quota exceeded: 2 instances exist, 2 more would pass the cluster's cap of 3 instances" {
		t.Fatalf("past the cap: %d %s", r.code, r.body)
	}
	third := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	clock.Add(quotaRefresh) // the refusal is checked against the store, not just estimated
	r = e.do("POST", "/api/v0/instances.create", map[string]any{"workload_id": wl.ID})
	if r.code != http.StatusTooManyRequests || r.errorText(t) != "quota exceeded: 3 instances exist, 1 more would pass the cluster's cap of 3 instances" {
		t.Fatalf("at the cap: %d %s", r.code, r.body)
	}
	// A deleted instance makes room once its record is gone.
	e.must(http.StatusNoContent, "POST", "/api/v0/instances.delete", map[string]any{"id": third.ID})
	e.sched.push(&commonpb.InstanceMetric{InstanceId: third.ID, Status: commonpb.ResourceStatus_TERMINATED})
	e.waitGone(third.ID)
	r = e.do("POST", "/api/v0/instances.create", map[string]any{"workload_id": wl.ID})
	if r.code != http.StatusTooManyRequests {
		t.Fatalf("counted less than a second ago: %d %s", r.code, r.body)
	}
	clock.Add(quotaRefresh)
	e.createInstances(map[string]any{"workload_id": wl.ID})
	insts, _, err := e.s.repo.listInstances(t.Context())
	if err != nil || len(insts) != 3 {
		t.Errorf("instances stored: %d, %v; want 3", len(insts), err)
	}
}

func TestQuotaOnPendingInstances(t *testing.T) {
	e, clock := quotaEnv(t, 0, 2)
	wl := e.createWorkload(podDef("web"))
	in := e.createInstances(map[string]any{"workload_id": wl.ID, "replicas": 2})
	r := e.do("POST", "/api/v0/instances.create", map[string]any{"workload_id": wl.ID})
	if r.code != http.StatusTooManyRequests ||
		r.errorText(t) != "quota exceeded: 2 instances are PENDING, 1 more would pass the cluster's cap of 2 pending instances" {
		t.Fatalf("past the pending cap: %d %s", r.code, r.body)
	}
	// Placed instances are no longer pending: room again.
	for _, i := range in {
		e.sched.push(&commonpb.InstanceMetric{InstanceId: i.ID, Status: commonpb.ResourceStatus_RUNNING, Node: "n1"})
		e.waitInstance(i.ID, "running", func(i workload.Instance) bool { return i.Status == workload.StatusRunning })
	}
	clock.Add(quotaRefresh)
	e.createInstances(map[string]any{"workload_id": wl.ID, "replicas": 2})
	r = e.do("POST", "/api/v0/instances.create", map[string]any{"workload_id": wl.ID})
	if r.code != http.StatusTooManyRequests {
		t.Errorf("past the pending cap again: %d %s", r.code, r.body)
	}
}

// The counts come from the store: instances another controller created
// count too once they are counted again.
func TestQuotaCountsTheStore(t *testing.T) {
	e, clock := quotaEnv(t, 2, 0)
	wl := e.createWorkload(podDef("web"))
	e.createInstances(map[string]any{"workload_id": wl.ID})
	for i := range 2 {
		inst := workload.Instance{ID: fmt.Sprintf("other-%d", i), Name: fmt.Sprintf("other-%d", i), WorkloadID: wl.ID, Kind: workload.KindPod, Status: workload.StatusRunning}
		data, _ := json.Marshal(instanceRecord{ID: inst.ID, Name: inst.Name, Value: inst})
		if _, err := e.st.Put(t.Context(), instanceKey(workload.KindPod, inst.Name), data, store.Any); err != nil {
			t.Fatal(err)
		}
	}
	clock.Add(quotaRefresh)
	r := e.do("POST", "/api/v0/instances.create", map[string]any{"workload_id": wl.ID})
	if r.code != http.StatusTooManyRequests || !strings.Contains(r.errorText(t), "3 instances exist") {
		t.Errorf("with instances written by another controller: %d %s", r.code, r.body)
	}
}

func TestAdmissionFor(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, lp, _ := net.SplitHostPort(ln.Addr().String())
	a := admissionFor(Config{Addr: ":5401", SchedulerAddr: "http://sched:5496/", Listener: ln,
		Admission: &Admission{Policy: workload.Policy{ReservedPorts: []int{22, 5401}}}})
	want := fmt.Sprintf("[22 5401 5496 %s]", lp)
	if got := fmt.Sprint(a.Policy.ReservedPorts); got != want {
		t.Errorf("reserved ports = %s, want %s", got, want)
	}
	if d := DefaultAdmission(); d.MaxInstances != DefaultMaxInstances || d.MaxPending != DefaultMaxPending || d.Policy.DefaultCPU != 100 {
		t.Errorf("DefaultAdmission() = %+v", d)
	}
}

// BenchmarkQuotaRecount measures a quota check with n instances in the
// bolt store: "count" lists and counts them (done at most once a second),
// "estimate" is the check in between.
func BenchmarkQuotaRecount(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		for _, recount := range []bool{true, false} {
			name := fmt.Sprintf("estimate/%d", n)
			if recount {
				name = fmt.Sprintf("count/%d", n)
			}
			b.Run(name, func(b *testing.B) {
				s, clock := benchQuotaServer(b, n)
				wl := workloadRecord{Name: "web", Value: workload.Workload{Kind: workload.KindPod, Name: "web",
					Spec: workload.Spec{Containers: []workload.Container{{Name: "c", Image: "i"}}}}}
				b.ReportAllocs()
				for b.Loop() {
					if recount {
						clock.Add(quotaRefresh)
					}
					if err := s.admitInstances(b.Context(), wl, 1); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// benchQuotaServer is a controller (not started) over a bolt store
// holding n instance records.
func benchQuotaServer(b *testing.B, n int) (*Server, *fakeClock) {
	st, err := bolt.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	for i := range n {
		name := fmt.Sprintf("web-%05d", i)
		data, _ := json.Marshal(instanceRecord{ID: name, Name: name, Value: workload.Instance{
			ID: name, Name: name, WorkloadID: "w", WorkloadName: "web", Kind: workload.KindPod,
			Status: workload.StatusRunning, Node: "node1", IP: "10.63.0.2", Message: "started"}})
		if _, err := st.Put(b.Context(), instanceKey(workload.KindPod, name), data, store.Any); err != nil {
			b.Fatal(err)
		}
	}
	a := DefaultAdmission()
	a.MaxInstances, a.MaxPending = 1<<30, 1<<30
	s, err := NewServer(Config{Store: st, SchedulerAddr: "127.0.0.1:1", Admission: &a})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.link.close)
	clock := &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	s.now = clock.Now
	return s, clock
}
