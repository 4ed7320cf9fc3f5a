package probe

import (
	"testing"
	"time"

	"github.com/rik-org/rik/internal/workload"
)

func TestSettingsOf(t *testing.T) {
	for _, tc := range []struct {
		in   workload.Probe
		want Settings
	}{
		{workload.Probe{}, Settings{10 * time.Second, time.Second, 3, 0}},
		{workload.Probe{IntervalSeconds: -5, TimeoutSeconds: -1, FailureThreshold: -2, InitialDelaySeconds: -3},
			Settings{10 * time.Second, time.Second, 3, 0}},
		{workload.Probe{IntervalSeconds: 2, TimeoutSeconds: 3, FailureThreshold: 1, InitialDelaySeconds: 4},
			Settings{2 * time.Second, 3 * time.Second, 1, 4 * time.Second}},
		{workload.Probe{IntervalSeconds: 1 << 62, TimeoutSeconds: 1 << 62, FailureThreshold: 1 << 62, InitialDelaySeconds: 1 << 62},
			Settings{24 * time.Hour, 24 * time.Hour, 1000, 24 * time.Hour}},
	} {
		if got := SettingsOf(tc.in); got != tc.want {
			t.Errorf("SettingsOf(%+v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestObserve(t *testing.T) {
	for _, tc := range []struct {
		name      string
		kind      Kind
		threshold int
		checks    string // p: passed, f: failed
		want      string // ok after each check: + or -
	}{
		{"readiness starts unready, one pass makes it ready", Readiness, 3, "p", "+"},
		{"readiness stays unready while failing", Readiness, 3, "fff", "---"},
		{"readiness needs threshold failures in a row", Readiness, 3, "pffpfff", "++++++-"},
		{"readiness threshold 1", Readiness, 1, "pfp", "+-+"},
		{"liveness starts alive", Liveness, 3, "ff", "++"},
		{"liveness fails at threshold", Liveness, 3, "fff", "++-"},
		{"a pass resets the count", Liveness, 2, "fpfpf", "+++++"},
		{"liveness threshold 1", Liveness, 1, "f", "-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := initialState(tc.kind)
			got := ""
			for _, c := range tc.checks {
				s = s.observe(c == 'p', tc.threshold)
				if s.ok {
					got += "+"
				} else {
					got += "-"
				}
			}
			if got != tc.want {
				t.Errorf("after %s: %s, want %s", tc.checks, got, tc.want)
			}
		})
	}
}

func TestOf(t *testing.T) {
	http := &workload.Probe{HTTP: &workload.HTTPProbe{Port: 80}}
	tcp := &workload.Probe{TCP: &workload.TCPProbe{Port: 81}}
	empty := &workload.Probe{IntervalSeconds: 3} // no check: no probe
	pod := workload.Workload{Spec: workload.Spec{Containers: []workload.Container{
		{Name: "a", Healthcheck: &workload.Healthcheck{Readiness: http, Liveness: tcp}},
		{Name: "b"},
		{Name: "c", Healthcheck: &workload.Healthcheck{Readiness: empty, Liveness: http}},
	}}}
	got := Of(pod)
	want := []Probe{{Readiness, "a", *http}, {Liveness, "a", *tcp}, {Liveness, "c", *http}}
	if len(got) != len(want) {
		t.Fatalf("Of(pod) = %+v", got)
	}
	for i := range want {
		if got[i].Kind != want[i].Kind || got[i].Container != want[i].Container || got[i].Spec.HTTP != want[i].Spec.HTTP || got[i].Spec.TCP != want[i].Spec.TCP {
			t.Errorf("probe %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if !HasReadiness(got) || HasReadiness(got[1:]) {
		t.Error("HasReadiness wrong")
	}
	fn := workload.Workload{Spec: workload.Spec{Function: &workload.Function{Healthcheck: &workload.Healthcheck{Liveness: tcp}}}}
	if got := Of(fn); len(got) != 1 || got[0].Container != "" || got[0].Kind != Liveness {
		t.Errorf("Of(function) = %+v", got)
	}
	if got := Of(workload.Workload{}); len(got) != 0 {
		t.Errorf("Of(empty) = %+v", got)
	}
}
