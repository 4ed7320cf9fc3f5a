package controller

import (
	"encoding/json"
	"net"
	"testing"

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
	if _, err := e.st.Put(t.Context(), "/workload/pods/default/old", data, 0); err != nil {
		t.Fatal(err)
	}
	r := e.do("POST", "/api/v0/instances.create", map[string]any{"workload_id": "old"})
	if r.code != 400 || r.errorText(t) != "workload old: spec.containers[0].ports[0].port: host port 22 is below 1024 (system ports)" {
		t.Errorf("instances.create of a stored definition with port 22: %d %s", r.code, r.body)
	}
	insts, err := e.s.svc.ListInstances(t.Context())
	if err != nil || len(insts) != 0 {
		t.Errorf("instances stored: %d, %v", len(insts), err)
	}
}
