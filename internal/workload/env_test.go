package workload

import (
	"slices"
	"testing"
)

func TestOverlayEnv(t *testing.T) {
	base := []string{"PATH=/bin", "HOME=/", "X=1=2"}
	got := OverlayEnv(base, []EnvVar{{Name: "HOME", Value: "/root"}, {Name: "A", Value: "a=b"}, {Name: "X", Value: ""}, {Name: "A", Value: "later"}})
	if want := []string{"PATH=/bin", "HOME=/root", "X=", "A=later"}; !slices.Equal(got, want) {
		t.Errorf("OverlayEnv = %q, want %q", got, want)
	}
	if base[1] != "HOME=/" {
		t.Error("OverlayEnv changed its base")
	}
	if got := OverlayEnv(nil, nil); len(got) != 0 {
		t.Errorf("OverlayEnv(nil, nil) = %q", got)
	}
}
