package sdn

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/rik-org/rik/internal/workload"
)

// Uninstall takes the node back to what it was before rik: rik's table,
// chains, jumps, TAPs and state go, every other rule and device stays.
func TestUninstallLeavesTheNodeAsBefore(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *testBackend) {
		ctx := context.Background()
		host := newFakeHost()
		before := b.ipt.snapshot()
		cfg := Config{StateDir: t.TempDir()}
		m, err := newManager(ctx, cfg, b.fw, host)
		if err != nil {
			t.Fatal(err)
		}
		fn, err := m.SetupFunction(ctx, "fn-a", []workload.PortMapping{{Port: 8080, TargetPort: 80}})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Expose(ctx, "pod-a", netip.MustParseAddr("10.63.0.5"), []workload.PortMapping{{Port: 9090}}); err != nil {
			t.Fatal(err)
		}
		// A jump inserted twice (e.g. by two riklet versions) goes entirely.
		if err := b.ipt.Restore(ctx, []byte("*filter\n-A FORWARD "+strings.Join(jumps[3].Rule, " ")+"\nCOMMIT\n")); err != nil {
			t.Fatal(err)
		}
		if len(b.mappings(t)) != 2 {
			t.Fatalf("test broken: mappings %v", b.mappings(t))
		}

		for i := range 2 { // the second run finds nothing to do
			if err := uninstall(ctx, cfg, b.ipt, b.nft, host); err != nil {
				t.Fatalf("uninstall #%d: %v", i+1, err)
			}
			if diff := cmp.Diff(before, b.ipt.snapshot(), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("after uninstall #%d, tables differ from before rik (-before +after):\n%s", i+1, diff)
			}
			if b.nft.table != nil {
				t.Errorf("after uninstall #%d, rik's nftables table is still there", i+1)
			}
			if _, ok := host.link(fn.Tap); ok {
				t.Errorf("tap %s still there", fn.Tap)
			}
			for _, l := range []string{"lo", "eth0", "rik0"} {
				if _, ok := host.link(l); !ok {
					t.Errorf("uninstall deleted %s, not a rik tap", l)
				}
			}
			if _, err := os.Stat(filepath.Join(cfg.StateDir, "sdn")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("sdn state left: %v", err)
			}
		}

		// A riklet starting afterwards starts from nothing.
		m2, err := newManager(ctx, cfg, b.fw, host)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m2.Lookup("fn-a"); ok {
			t.Error("fn-a's network survived uninstall")
		}
		if got := b.mappings(t); len(got) != 0 {
			t.Errorf("mappings after a fresh start: %v", got)
		}
	})
}

// A node rik never ran on is left exactly as it is.
func TestUninstallCleanNode(t *testing.T) {
	ipt, nft, host := newFakeIptables(), &fakeNft{}, newFakeHost()
	before := ipt.snapshot()
	if err := uninstall(context.Background(), Config{}, ipt, nft, host); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, ipt.snapshot(), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("tables changed (-before +after):\n%s", diff)
	}
	if host.delCalls != 0 {
		t.Errorf("%d links deleted on a clean node", host.delCalls)
	}
	// Neither iptables nor nftables: only TAPs are looked at.
	if err := uninstall(context.Background(), Config{}, nil, nil, host); err != nil {
		t.Fatal(err)
	}
}

// A rule that is not rik's and jumps to a rik chain stays, and so does the
// chain; the other chains still go, and the error says what happened.
func TestUninstallKeepsForeignJumps(t *testing.T) {
	ctx := context.Background()
	b := newTestBackend(FirewallIptables)
	_, host, cfg := newTestManager(t, b)
	ipt := b.ipt
	foreign := "-p tcp --dport 1 -j RIKLET"
	if err := ipt.Restore(ctx, []byte("*nat\n-A OUTPUT "+foreign+"\nCOMMIT\n")); err != nil {
		t.Fatal(err)
	}
	err := uninstall(ctx, cfg, ipt, b.nft, host)
	if err == nil || !strings.Contains(err.Error(), "nat RIKLET") {
		t.Fatalf("uninstall = %v, want an error about nat RIKLET", err)
	}
	if got := ipt.chain("nat", "OUTPUT"); !slices.Equal(got, []string{foreign}) {
		t.Errorf("nat OUTPUT = %q, want only the foreign rule", got)
	}
	snap := ipt.snapshot()
	if _, ok := snap["nat"][chainDNAT]; !ok {
		t.Error("RIKLET deleted while a rule jumps to it")
	}
	for _, c := range []struct{ table, chain string }{{"nat", chainPost}, {"filter", chainForward}, {"filter", chainInput}} {
		if _, ok := snap[c.table][c.chain]; ok {
			t.Errorf("%s %s left", c.table, c.chain)
		}
	}
	if _, err := os.Stat(filepath.Join(cfg.StateDir, "sdn")); err != nil {
		t.Errorf("state removed although uninstall failed: %v", err)
	}
}

// A TAP that cannot be deleted fails the uninstall and keeps the state.
func TestUninstallTapFailure(t *testing.T) {
	ctx := context.Background()
	b := newTestBackend(FirewallNftables)
	m, host, cfg := newTestManager(t, b)
	if _, err := m.SetupFunction(ctx, "fn-a", nil); err != nil {
		t.Fatal(err)
	}
	host.failDel = errors.New("device busy")
	if err := uninstall(ctx, cfg, b.ipt, b.nft, host); err == nil || !strings.Contains(err.Error(), "device busy") {
		t.Fatalf("uninstall = %v, want the tap error", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.StateDir, "sdn", "state.json")); err != nil {
		t.Errorf("state removed although a tap is left: %v", err)
	}
	host.failDel = nil
	if err := uninstall(ctx, cfg, b.ipt, b.nft, host); err != nil {
		t.Fatalf("retry: %v", err)
	}
}
