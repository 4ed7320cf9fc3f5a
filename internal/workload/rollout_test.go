package workload

import (
	"errors"
	"strings"
	"testing"
)

func TestUpdateDefaults(t *testing.T) {
	var nilU *Update
	if nilU.Surge() != 1 || nilU.Unavailable() != 0 || nilU.MinReady() != 0 || nilU.ProgressDeadline() != 600 {
		t.Fatalf("nil update defaults: %d %d %d %d", nilU.Surge(), nilU.Unavailable(), nilU.MinReady(), nilU.ProgressDeadline())
	}
	two, zero := 2, 0
	u := &Update{MaxSurge: &zero, MaxUnavailable: &two, MinReadySeconds: 5, ProgressDeadlineSeconds: 30}
	if u.Surge() != 0 || u.Unavailable() != 2 || u.MinReady() != 5 || u.ProgressDeadline() != 30 {
		t.Fatalf("explicit update: %+v", u)
	}
}

func TestValidateUpdateAndProbes(t *testing.T) {
	const pod = `{"apiVersion":"v1","kind":"Pod","name":"web","replicas":%s,%s"spec":{"containers":[{"name":"c","image":"nginx","ports":[{"port":8080,"targetPort":80}]%s}]}}`
	const fn = `{"apiVersion":"v1","kind":"Function","name":"fn","spec":{"function":{"execution":{"rootfs":"https://x/r.ext4"},"exposure":[{"port":8080,"targetPort":80}]%s}}}`
	tests := []struct {
		name string
		def  string
		want string // "" = valid; else a substring of the error
	}{
		{"valid probe on targetPort", sprintf(pod, "3", "", `,"healthcheck":{"readiness":{"http":{"path":"/","port":80}},"liveness":{"tcp":{"port":80}}}`), ""},
		{"valid update", sprintf(pod, "3", `"update":{"maxSurge":0,"maxUnavailable":1,"minReadySeconds":5},`, ""), ""},
		{"negative replicas", sprintf(pod, "-1", "", ""), "replicas: must be between 0 and 1000"},
		{"surge and unavailable 0", sprintf(pod, "3", `"update":{"maxSurge":0,"maxUnavailable":0},`, ""), "update: maxSurge and maxUnavailable cannot both be 0"},
		{"unavailable 0 with default surge ok", sprintf(pod, "3", `"update":{"maxUnavailable":0},`, ""), ""},
		{"negative surge", sprintf(pod, "3", `"update":{"maxSurge":-1},`, ""), "update.maxSurge: must be between 0"},
		{"negative unavailable", sprintf(pod, "3", `"update":{"maxUnavailable":-2},`, ""), "update.maxUnavailable: must be between 0"},
		{"negative minReady", sprintf(pod, "3", `"update":{"minReadySeconds":-2},`, ""), "update.minReadySeconds: must be between 0"},
		{"negative deadline", sprintf(pod, "3", `"update":{"progressDeadlineSeconds":-2},`, ""), "update.progressDeadlineSeconds: must be between 0"},
		{"host port is not the container's", sprintf(pod, "1", "", `,"healthcheck":{"readiness":{"http":{"port":8080}}}`),
			"spec.containers[0].healthcheck.readiness.http.port: port 8080 is not exposed: must be one of the targetPorts 80"},
		{"tcp port not exposed", sprintf(pod, "1", "", `,"healthcheck":{"liveness":{"tcp":{"port":9}}}`),
			"spec.containers[0].healthcheck.liveness.tcp.port: port 9 is not exposed"},
		{"no check", sprintf(pod, "1", "", `,"healthcheck":{"readiness":{"intervalSeconds":3}}`),
			"spec.containers[0].healthcheck.readiness: exactly one of http, tcp or exec required, got 0"},
		{"two checks", sprintf(pod, "1", "", `,"healthcheck":{"readiness":{"tcp":{"port":80},"exec":{"command":["true"]}}}`),
			"spec.containers[0].healthcheck.readiness: exactly one of http, tcp or exec required, got 2"},
		{"exec empty", sprintf(pod, "1", "", `,"healthcheck":{"readiness":{"exec":{"command":[]}}}`),
			"spec.containers[0].healthcheck.readiness.exec.command: required"},
		{"negative interval", sprintf(pod, "1", "", `,"healthcheck":{"readiness":{"tcp":{"port":80},"intervalSeconds":-1}}`),
			"spec.containers[0].healthcheck.readiness.intervalSeconds: must be between 0"},
		{"relative http path", sprintf(pod, "1", "", `,"healthcheck":{"readiness":{"http":{"path":"x","port":80}}}`),
			"spec.containers[0].healthcheck.readiness.http.path: must be an absolute path"},
		{"function tcp probe", sprintf(fn, `,"healthcheck":{"readiness":{"tcp":{"port":80}}}`), ""},
		{"function exec probe", sprintf(fn, `,"healthcheck":{"liveness":{"exec":{"command":["true"]}}}`),
			"spec.function.healthcheck.liveness.exec: exec probes are for pods"},
		{"function probe not exposed", sprintf(fn, `,"healthcheck":{"readiness":{"http":{"port":8080}}}`),
			"spec.function.healthcheck.readiness.http.port: port 8080 is not exposed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.def))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func sprintf(format string, args ...string) string {
	for _, a := range args {
		format = strings.Replace(format, "%s", a, 1)
	}
	return format
}

func TestHasReadiness(t *testing.T) {
	w := Workload{Spec: Spec{Containers: []Container{{Name: "a"}, {Name: "b", Healthcheck: &Healthcheck{Liveness: &Probe{}}}}}}
	if w.HasReadiness() {
		t.Fatal("liveness only: HasReadiness true")
	}
	w.Spec.Containers[0].Healthcheck = &Healthcheck{Readiness: &Probe{}}
	if !w.HasReadiness() {
		t.Fatal("readiness on a container: HasReadiness false")
	}
	f := Workload{Spec: Spec{Function: &Function{Healthcheck: &Healthcheck{Readiness: &Probe{}}}}}
	if !f.HasReadiness() {
		t.Fatal("function readiness: HasReadiness false")
	}
}
