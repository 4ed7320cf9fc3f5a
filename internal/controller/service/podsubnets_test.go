package service

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/store"
)

func TestNextSubnet(t *testing.T) {
	p := netip.MustParsePrefix
	cluster := p("10.63.0.0/16")
	tests := []struct {
		name    string
		cluster netip.Prefix
		bits    int
		taken   []netip.Prefix
		want    string // "" = error
	}{
		{"first", cluster, 24, nil, "10.63.0.0/24"},
		{"after taken ones", cluster, 24, []netip.Prefix{p("10.63.0.0/24"), p("10.63.1.0/24")}, "10.63.2.0/24"},
		{"a hole is reused", cluster, 24, []netip.Prefix{p("10.63.1.0/24")}, "10.63.0.0/24"},
		{"a larger taken range is skipped", cluster, 24, []netip.Prefix{p("10.63.0.0/23")}, "10.63.2.0/24"},
		{"smaller subnets", cluster, 26, []netip.Prefix{p("10.63.0.0/26")}, "10.63.0.64/26"},
		{"exhausted", p("10.63.0.0/23"), 24, []netip.Prefix{p("10.63.0.0/24"), p("10.63.1.0/24")}, ""},
		{"subnet larger than the cluster", cluster, 8, nil, ""},
		{"too small", cluster, 31, nil, ""},
		{"ipv6", p("fd00::/48"), 64, nil, ""},
		{"unmasked cluster", p("10.63.9.9/16"), 24, nil, "10.63.0.0/24"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := nextSubnet(tt.cluster, tt.bits, tt.taken)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("got %s, want an error", got)
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Fatalf("got %s, %v; want %s", got, err, tt.want)
			}
		})
	}
}

// netScheduler is a fakeScheduler that takes the pod subnets.
type netScheduler struct {
	*fakeScheduler
	mu   sync.Mutex
	sent []map[string]netip.Prefix
}

func (n *netScheduler) SetNetworks(_ context.Context, cluster netip.Prefix, subnets map[string]netip.Prefix) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sent = append(n.sent, maps.Clone(subnets))
	// The scheduler now lists them.
	n.fakeScheduler.set(func(f *fakeScheduler) {
		for i := range f.nodes {
			if s, ok := subnets[f.nodes[i].Name]; ok {
				f.nodes[i].PodSubnet = s.String()
			}
		}
	})
	return nil
}

func (n *netScheduler) sends() []map[string]netip.Prefix {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.sent)
}

func newNetFixture(t *testing.T) (*fixture, *netScheduler) {
	ns := &netScheduler{fakeScheduler: &fakeScheduler{}}
	f := newFixture(t, func(c *Config) { c.Scheduler = ns })
	return f, ns
}

func setNodes(ns *netScheduler, names ...string) {
	ns.fakeScheduler.set(func(f *fakeScheduler) {
		f.nodes = nil
		for _, n := range names {
			f.nodes = append(f.nodes, api.Node{Name: n, Status: "Ready"})
		}
	})
}

func TestSyncNodesAllocatesStableSubnets(t *testing.T) {
	f, ns := newNetFixture(t)
	ctx := context.Background()
	setNodes(ns, "n1", "n2")
	if _, err := f.s.syncNodes(ctx); err != nil {
		t.Fatal(err)
	}
	sent := ns.sends()
	want := map[string]netip.Prefix{"n1": netip.MustParsePrefix("10.63.0.0/24"), "n2": netip.MustParsePrefix("10.63.1.0/24")}
	if len(sent) != 1 || !maps.Equal(sent[0], want) {
		t.Fatalf("sent %v, want %v once", sent, want)
	}
	// The scheduler has them: nothing more is sent.
	if _, err := f.s.syncNodes(ctx); err != nil || len(ns.sends()) != 1 {
		t.Fatalf("second sync: %v, %d sends", err, len(ns.sends()))
	}
	// n1 is forgotten by the scheduler, a new node comes, n1 comes back:
	// n1 keeps its subnet, the new one gets a free one.
	setNodes(ns, "n2", "n3")
	if _, err := f.s.syncNodes(ctx); err != nil {
		t.Fatal(err)
	}
	setNodes(ns, "n1", "n2", "n3") // a restarted scheduler: it lists no subnet
	if _, err := f.s.syncNodes(ctx); err != nil {
		t.Fatal(err)
	}
	sent = ns.sends()
	last := sent[len(sent)-1]
	if last["n1"] != want["n1"] || last["n2"] != want["n2"] || last["n3"] != netip.MustParsePrefix("10.63.2.0/24") {
		t.Fatalf("after n1 came back: %v", last)
	}
	// A controller restarted on the same store hands out the same.
	f2 := newFixtureOn(t, f.st, func(c *Config) { c.Scheduler = ns })
	byNode, err := f2.s.ensureSubnets(ctx, []string{"n1", "n2", "n3"})
	if err != nil || !maps.Equal(byNode, last) {
		t.Fatalf("after a controller restart: %v, %v", byNode, err)
	}
}

func TestDuplicateClaimsKeepTheLowest(t *testing.T) {
	f, _ := newNetFixture(t)
	ctx := context.Background()
	for _, s := range []string{"10.63.5.0/24", "10.63.3.0/24"} {
		p := netip.MustParsePrefix(s)
		data, _ := json.Marshal(subnetRecord{Node: "n1", Subnet: s})
		if _, err := f.st.Put(ctx, podSubnetKey(p), data, 0); err != nil {
			t.Fatal(err)
		}
	}
	// An unreadable claim still holds its subnet.
	if _, err := f.st.Put(ctx, podSubnetKey(netip.MustParsePrefix("10.63.0.0/24")), []byte("{"), 0); err != nil {
		t.Fatal(err)
	}
	byNode, err := f.s.ensureSubnets(ctx, []string{"n1", "n2"})
	if err != nil {
		t.Fatal(err)
	}
	if byNode["n1"].String() != "10.63.3.0/24" || byNode["n2"].String() != "10.63.1.0/24" {
		t.Fatalf("got %v", byNode)
	}
	if _, err := f.st.Get(ctx, podSubnetKey(netip.MustParsePrefix("10.63.5.0/24"))); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("duplicate claim not released: %v", err)
	}
}

func TestNoSubnetsWithoutNetworkSetter(t *testing.T) {
	f := newFixture(t)
	f.sched.set(func(s *fakeScheduler) { s.nodes = []api.Node{{Name: "n1"}} })
	if _, err := f.s.syncNodes(context.Background()); err != nil {
		t.Fatal(err)
	}
	kvs, err := f.st.List(context.Background(), podSubnetPrefix)
	if err != nil || len(kvs) != 0 {
		t.Fatalf("claims without a scheduler that takes them: %v, %v", kvs, err)
	}
}
