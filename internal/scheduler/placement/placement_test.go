package placement

import (
	"fmt"
	"testing"
)

func ready(name string, cpu, mem, allocCPU, allocMem int64) Node {
	return Node{Name: name, Ready: true, Connected: true,
		CPUCapacity: cpu, MemoryCapacity: mem, CPUAllocated: allocCPU, MemoryAllocated: allocMem}
}

func TestPlace(t *testing.T) {
	tcp80 := Port{Number: 80, Protocol: "TCP"}
	udp80 := Port{Number: 80, Protocol: "UDP"}
	small := Request{CPUMillis: 500, MemoryMiB: 256, Kind: "pod"}
	tests := []struct {
		name     string
		req      Request
		nodes    []Node
		strategy Strategy
		want     string
		reason   string
	}{
		{
			name:   "no nodes",
			req:    small,
			reason: "no node fits: no nodes registered",
		},
		{
			name:     "spread picks least allocated",
			req:      small,
			nodes:    []Node{ready("a", 4000, 4096, 3000, 0), ready("b", 4000, 4096, 1000, 0), ready("c", 4000, 4096, 2000, 0)},
			strategy: Spread,
			want:     "b",
		},
		{
			name:     "binpack picks most allocated that fits",
			req:      small,
			nodes:    []Node{ready("a", 4000, 4096, 3000, 0), ready("b", 4000, 4096, 1000, 0), ready("c", 4000, 4096, 3600, 0)},
			strategy: Binpack,
			want:     "a",
		},
		{
			name:     "spread uses the dominant resource",
			req:      small,
			nodes:    []Node{ready("a", 4000, 1024, 0, 768), ready("b", 4000, 4096, 2000, 0)},
			strategy: Spread,
			want:     "b",
		},
		{
			name:     "spread compares fractions, not absolute values",
			req:      small,
			nodes:    []Node{ready("small", 1000, 1024, 0, 0), ready("big", 16000, 65536, 2000, 2048)},
			strategy: Spread,
			want:     "big",
		},
		{
			name:     "ties broken by fewer instances then name",
			req:      small,
			nodes:    []Node{{Name: "c", Ready: true, Connected: true, Instances: 1}, {Name: "b", Ready: true, Connected: true}, {Name: "a", Ready: true, Connected: true, Instances: 2}},
			strategy: Spread,
			want:     "b",
		},
		{
			name:     "ties broken by name",
			req:      small,
			nodes:    []Node{ready("b", 1000, 0, 0, 0), ready("a", 1000, 0, 0, 0)},
			strategy: Spread,
			want:     "a",
		},
		{
			name:     "binpack ties broken by more instances",
			req:      small,
			nodes:    []Node{{Name: "a", Ready: true, Connected: true}, {Name: "b", Ready: true, Connected: true, Instances: 3}},
			strategy: Binpack,
			want:     "b",
		},
		{
			name:     "capacity 0 fits anything",
			req:      Request{CPUMillis: 1 << 40, MemoryMiB: 1 << 40, Kind: "pod"},
			nodes:    []Node{ready("a", 0, 0, 0, 0)},
			strategy: Spread,
			want:     "a",
		},
		{
			name:     "exact fit",
			req:      Request{CPUMillis: 1000, MemoryMiB: 512, Kind: "pod"},
			nodes:    []Node{ready("a", 2000, 1024, 1000, 512)},
			strategy: Spread,
			want:     "a",
		},
		{
			name:     "example reason",
			req:      Request{CPUMillis: 2000, Kind: "pod"},
			nodes:    []Node{ready("a", 1000, 0, 0, 0), ready("b", 4000, 0, 3000, 0), {Name: "c", Connected: true}},
			strategy: Spread,
			reason:   "no node fits: 3 nodes; 2 lack cpu (needs 2000m), 1 NotReady",
		},
		{
			name:  "memory, kind, disconnected",
			req:   Request{MemoryMiB: 512, Kind: "function"},
			nodes: []Node{ready("a", 0, 256, 0, 0), {Name: "b", Ready: true, Connected: true, Kinds: []string{"pod"}}, {Name: "c", Ready: true}},
			reason: "no node fits: 3 nodes; 1 disconnected, 1 do not run function, " +
				"1 lack memory (needs 512MiB)",
		},
		{
			name:     "kind supported",
			req:      Request{Kind: "function"},
			nodes:    []Node{{Name: "a", Ready: true, Connected: true, Kinds: []string{"pod", "function"}}},
			strategy: Spread,
			want:     "a",
		},
		{
			name:   "one node NotReady",
			req:    small,
			nodes:  []Node{{Name: "a", Connected: true}},
			reason: "no node fits: 1 node; 1 NotReady",
		},
		{
			name: "host port in use",
			req:  Request{Kind: "pod", HostPorts: []Port{tcp80}},
			nodes: []Node{
				{Name: "a", Ready: true, Connected: true, UsedPorts: map[Port]int{tcp80: 1}},
				{Name: "b", Ready: true, Connected: true, UsedPorts: map[Port]int{udp80: 1, tcp80: 0}},
			},
			strategy: Spread,
			want:     "b",
		},
		{
			name:   "host port in use everywhere",
			req:    Request{Kind: "pod", HostPorts: []Port{udp80, tcp80}},
			nodes:  []Node{{Name: "a", Ready: true, Connected: true, UsedPorts: map[Port]int{tcp80: 2}}},
			reason: "no node fits: 1 node; 1 have port 80/TCP in use",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason := Place(tt.req, tt.nodes, tt.strategy)
			if got != tt.want || reason != tt.reason {
				t.Errorf("Place() = %q, %q; want %q, %q", got, reason, tt.want, tt.reason)
			}
		})
	}
}

func TestParseStrategy(t *testing.T) {
	for in, want := range map[string]Strategy{"": Spread, "spread": Spread, "BinPack": Binpack} {
		got, err := ParseStrategy(in)
		if err != nil || got != want {
			t.Errorf("ParseStrategy(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseStrategy("random"); err == nil {
		t.Error("ParseStrategy(random): want error")
	}
}

// TestSpreadEvens places instances one by one and checks that spread keeps
// nodes balanced while binpack fills one node before the next.
func TestSpreadEvens(t *testing.T) {
	for _, tt := range []struct {
		strategy Strategy
		want     []int64
	}{
		{Spread, []int64{2000, 2000, 2000}},
		{Binpack, []int64{4000, 2000, 0}},
	} {
		nodes := []Node{ready("a", 4000, 0, 0, 0), ready("b", 4000, 0, 0, 0), ready("c", 4000, 0, 0, 0)}
		req := Request{CPUMillis: 1000, Kind: "pod"}
		for i := 0; i < 6; i++ {
			name, reason := Place(req, nodes, tt.strategy)
			if name == "" {
				t.Fatalf("%s: placement %d failed: %s", tt.strategy, i, reason)
			}
			for j := range nodes {
				if nodes[j].Name == name {
					nodes[j].CPUAllocated += req.CPUMillis
					nodes[j].Instances++
				}
			}
		}
		got := fmt.Sprint(nodes[0].CPUAllocated, nodes[1].CPUAllocated, nodes[2].CPUAllocated)
		if want := fmt.Sprint(tt.want[0], tt.want[1], tt.want[2]); got != want {
			t.Errorf("%s: allocations %s, want %s", tt.strategy, got, want)
		}
	}
}
