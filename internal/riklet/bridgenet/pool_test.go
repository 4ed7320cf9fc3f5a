package bridgenet

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/rik-org/rik/internal/riklet/podnet"
)

func TestSplitPool(t *testing.T) {
	dir := t.TempDir()
	pool, err := podnet.OpenPool(dir, netip.MustParsePrefix("10.99.0.0/29"))
	if err != nil {
		t.Fatal(err)
	}
	pods, fns := SplitPool(pool)
	a, err := pods.Allocate("x")
	if err != nil {
		t.Fatal(err)
	}
	b, err := fns.Allocate("x") // the same id in both: two leases
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Fatalf("pod and function x share %s", a)
	}
	if got := pods.Owners(); !slices.Equal(got, []string{"x"}) {
		t.Errorf("pod owners = %v", got)
	}
	if got := fns.Owners(); !slices.Equal(got, []string{"x"}) {
		t.Errorf("function owners = %v", got)
	}
	if err := pods.Release("x"); err != nil {
		t.Fatal(err)
	}
	if got, ok := fns.Lookup("x"); !ok || got != b {
		t.Errorf("function lease after the pod's release = %v, %v; want %v", got, ok, b)
	}
	// Persisted: a reopened pool keeps the function's lease apart.
	pool2, err := podnet.OpenPool(dir, netip.MustParsePrefix("10.99.0.0/29"))
	if err != nil {
		t.Fatal(err)
	}
	pods2, fns2 := SplitPool(pool2)
	if len(pods2.Owners()) != 0 || !slices.Equal(fns2.Owners(), []string{"x"}) {
		t.Errorf("after reopening: pods %v, functions %v", pods2.Owners(), fns2.Owners())
	}
}
