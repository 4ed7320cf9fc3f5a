package version

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestString(t *testing.T) {
	old := Version
	Version = "v1.2.3"
	t.Cleanup(func() { Version = old })
	if s := String("riklet"); !strings.HasPrefix(s, "riklet version v1.2.3 (go") {
		t.Errorf("String = %q", s)
	}
}

func TestBuildInfo(t *testing.T) {
	old := Version
	Version = "v1.2.3"
	t.Cleanup(func() { Version = old })
	reg := prometheus.NewRegistry()
	reg.MustRegister(BuildInfo())
	want := `# HELP rik_build_info A constant 1, labelled with the build's version and Go release.
# TYPE rik_build_info gauge
rik_build_info{goversion="` + GoVersion() + `",version="v1.2.3"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "rik_build_info"); err != nil {
		t.Error(err)
	}
}
