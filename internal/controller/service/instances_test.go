package service

import (
	"strings"
	"testing"

	"github.com/rik-org/rik/internal/workload"
)

func TestInstanceName(t *testing.T) {
	for _, wl := range []string{"web", strings.Repeat("a", 57), strings.Repeat("b", 56) + "-c", "x"} {
		n := instanceName(wl)
		if err := workload.ValidName(n); err != nil {
			t.Errorf("instanceName(%q) = %q: %v", wl, n, err)
		}
	}
	seen := map[string]bool{}
	for range 200 {
		seen[instanceName("web")] = true
	}
	if len(seen) < 190 {
		t.Errorf("only %d distinct names in 200", len(seen))
	}
}
