package placement

import (
	"fmt"
	"testing"
)

// BenchmarkPlace places 10,000 instances one by one on 1,000 nodes, updating
// allocations after each placement. One op = the 10,000 placements.
func BenchmarkPlace(b *testing.B) {
	const nodesN, instancesN = 1000, 10000
	for _, strategy := range []Strategy{Spread, Binpack} {
		b.Run(string(strategy), func(b *testing.B) {
			req := Request{CPUMillis: 250, MemoryMiB: 256, Kind: "pod"}
			for b.Loop() {
				nodes := make([]Node, nodesN)
				index := make(map[string]int, nodesN)
				for i := range nodes {
					nodes[i] = Node{Name: fmt.Sprintf("node-%04d", i), Ready: true, Connected: true,
						Kinds: []string{"pod", "function"}, CPUCapacity: 8000, MemoryCapacity: 16384}
					index[nodes[i].Name] = i
				}
				for range instancesN {
					name, reason := Place(req, nodes, strategy)
					if name == "" {
						b.Fatal(reason)
					}
					n := &nodes[index[name]]
					n.CPUAllocated += req.CPUMillis
					n.MemoryAllocated += req.MemoryMiB
					n.Instances++
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*instancesN), "ns/placement")
		})
	}
}
