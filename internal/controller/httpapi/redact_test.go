package httpapi

import (
	"testing"

	"github.com/rik-org/rik/internal/workload"
)

// Viewers see no env value, of containers nor of functions, and the
// definition redacted is a copy.
func TestRedactWorkload(t *testing.T) {
	pod := workload.Workload{Spec: workload.Spec{Containers: []workload.Container{
		{Name: "a", Env: []workload.EnvVar{{Name: "PASSWORD", Value: "p"}}}, {Name: "b"},
	}}}
	got := redactWorkload(pod)
	if got.Spec.Containers[0].Env[0] != (workload.EnvVar{Name: "PASSWORD", Value: RedactedValue}) || got.Spec.Containers[1].Env != nil {
		t.Errorf("pod redacted: %+v", got.Spec.Containers)
	}
	fn := workload.Workload{Spec: workload.Spec{Function: &workload.Function{Execution: workload.Execution{
		Rootfs: "http://x/r", Args: []string{"-v"}, Env: []workload.EnvVar{{Name: "TOKEN", Value: "t"}},
	}}}}
	got = redactWorkload(fn)
	if e := got.Spec.Function.Execution; e.Env[0] != (workload.EnvVar{Name: "TOKEN", Value: RedactedValue}) || e.Rootfs != "http://x/r" || e.Args[0] != "-v" {
		t.Errorf("function redacted: %+v", e)
	}
	if pod.Spec.Containers[0].Env[0].Value != "p" || fn.Spec.Function.Execution.Env[0].Value != "t" {
		t.Error("redacting changed the original")
	}
}
