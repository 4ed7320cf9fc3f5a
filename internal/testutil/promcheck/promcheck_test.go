package promcheck

import (
	"testing"

	"github.com/rik-org/rik/internal/testutil"
)

// promtool really judges: a counter not named _total is refused.
func TestLint(t *testing.T) {
	testutil.RequireTool(t, "promtool")
	good := "# HELP rik_x_total Things.\n# TYPE rik_x_total counter\nrik_x_total 1\n"
	if err := Lint([]byte(good)); err != nil {
		t.Errorf("good metrics refused: %v", err)
	}
	bad := "# HELP rik_x Things.\n# TYPE rik_x counter\nrik_x 1\n"
	if err := Lint([]byte(bad)); err == nil {
		t.Error("a counter without _total accepted")
	}
}
