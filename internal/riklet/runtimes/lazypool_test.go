package runtimes

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/rik-org/rik/internal/riklet/bridgenet"
)

// subnetSource is the fabric's Subnet as the pools see it: unknown until
// set, then the same prefix for good.
type subnetSource struct{ p netip.Prefix }

func (s *subnetSource) Subnet(ctx context.Context) (netip.Prefix, error) {
	if !s.p.IsValid() {
		<-ctx.Done()
		return netip.Prefix{}, ctx.Err()
	}
	return s.p, nil
}

func TestLazyPoolWaitsForTheSubnet(t *testing.T) {
	dir := t.TempDir()
	src := &subnetSource{}
	pods, fns := bridgenet.SplitPool(newLazyPool(dir, src.Subnet))

	// Before the control plane gave the subnet: no address, no owners, and
	// no release (nothing is dropped unseen).
	if p, err := fns.Allocate("f1"); err == nil {
		t.Fatalf("allocated %s before the subnet is known", p)
	}
	if _, ok := pods.Lookup("p1"); ok {
		t.Error("lookup found a lease before the subnet is known")
	}
	if err := fns.Release("f1"); err == nil {
		t.Error("release succeeded before the subnet is known")
	}
	if o := pods.Owners(); len(o) != 0 {
		t.Errorf("owners before the subnet is known: %v", o)
	}

	src.p = netip.MustParsePrefix("10.63.7.0/24")
	a, err := pods.Allocate("p1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := fns.Allocate("f1")
	if err != nil {
		t.Fatal(err)
	}
	if !src.p.Contains(a.Addr()) || !src.p.Contains(b.Addr()) || a == b {
		t.Fatalf("pod %s, function %s: want two addresses of %s", a, b, src.p)
	}

	// The riklet restarts before the fabric knows the subnet again: the
	// Function's lease is neither seen as gone nor released; once the
	// subnet is known it is there, with the same address.
	src2 := &subnetSource{}
	pods2, fns2 := bridgenet.SplitPool(newLazyPool(dir, src2.Subnet))
	if err := fns2.Release("f1"); err == nil {
		t.Error("release succeeded before the subnet is known, after a restart")
	}
	src2.p = src.p
	if got, ok := fns2.Lookup("f1"); !ok || got != b {
		t.Errorf("function lease after restart = %s, %v; want %s", got, ok, b)
	}
	if o := pods2.Owners(); !slices.Equal(o, []string{"p1"}) {
		t.Errorf("pod owners after restart = %v, want [p1]", o)
	}
	if o := fns2.Owners(); !slices.Equal(o, []string{"f1"}) {
		t.Errorf("function owners after restart = %v, want [f1]", o)
	}
}
