// Package placement chooses the node an instance runs on. It is pure: no I/O,
// no clock, no shared state; the scheduler builds the node views and applies
// the result.
package placement

import (
	"fmt"
	"slices"
	"strings"
)

// Strategy orders the nodes that fit.
type Strategy string

const (
	// Spread picks the least allocated node (default).
	Spread Strategy = "spread"
	// Binpack picks the most allocated node that still fits.
	Binpack Strategy = "binpack"
)

// ParseStrategy accepts "spread" (or "") and "binpack".
func ParseStrategy(s string) (Strategy, error) {
	switch Strategy(strings.ToLower(s)) {
	case "", Spread:
		return Spread, nil
	case Binpack:
		return Binpack, nil
	}
	return "", fmt.Errorf("strategy %q: want spread or binpack", s)
}

// Port is a host port and its protocol ("TCP" or "UDP").
type Port struct {
	Number   uint32
	Protocol string
}

func (p Port) String() string { return fmt.Sprintf("%d/%s", p.Number, p.Protocol) }

// Request is what an instance needs from a node.
type Request struct {
	CPUMillis int64
	MemoryMiB int64
	Kind      string // "pod" or "function"
	HostPorts []Port
}

// Node is the scheduler's view of one node.
type Node struct {
	Name      string
	Ready     bool // heard from within the node timeout
	Connected bool // has a Register stream open
	// Kinds the node runs; empty means it did not say (RIK riklets): any kind.
	Kinds []string
	// Capacity; 0 means the node does not report that resource: anything fits.
	CPUCapacity    int64
	MemoryCapacity int64
	// Allocated: the sum of the requests of the instances placed on the node.
	CPUAllocated    int64
	MemoryAllocated int64
	// UsedPorts counts the instances holding each host port; read only.
	UsedPorts map[Port]int
	Instances int
}

// Place returns the name of the node req should run on, or "" and a reason
// summarising why each node was filtered out, e.g.
// "no node fits: 3 nodes; 2 lack cpu (needs 2000m), 1 NotReady".
func Place(req Request, nodes []Node, strategy Strategy) (node, reason string) {
	best := -1
	var bestScore float64
	var f filtered
	for i := range nodes {
		n := &nodes[i]
		if why := filter(req, n); why.cause != fits {
			f.add(why)
			continue
		}
		score := share(req, n)
		if best < 0 || better(strategy, score, n, bestScore, &nodes[best]) {
			best, bestScore = i, score
		}
	}
	if best >= 0 {
		return nodes[best].Name, ""
	}
	return "", summarise(req, len(nodes), &f)
}

// filtered counts the nodes filtered out, by rejection.
type filtered struct {
	causes [numCauses]int
	ports  map[Port]int // portInUse, by the first port found in use
}

func (f *filtered) add(r rejection) {
	if r.cause != portInUse {
		f.causes[r.cause]++
		return
	}
	if f.ports == nil {
		f.ports = map[Port]int{}
	}
	f.ports[r.port]++
}

type cause int

const (
	fits cause = iota
	notReady
	disconnected
	wrongKind
	lackCPU
	lackMemory
	portInUse
	numCauses
)

// rejection is why a node was filtered out; port is set for portInUse.
type rejection struct {
	cause cause
	port  Port
}

// filter returns why n cannot take req, or a rejection with cause fits.
func filter(req Request, n *Node) rejection {
	switch {
	case !n.Ready:
		return rejection{cause: notReady}
	case !n.Connected:
		return rejection{cause: disconnected}
	case len(n.Kinds) > 0 && !slices.Contains(n.Kinds, req.Kind):
		return rejection{cause: wrongKind}
	case n.CPUCapacity > 0 && n.CPUAllocated+req.CPUMillis > n.CPUCapacity:
		return rejection{cause: lackCPU}
	case n.MemoryCapacity > 0 && n.MemoryAllocated+req.MemoryMiB > n.MemoryCapacity:
		return rejection{cause: lackMemory}
	}
	for _, p := range req.HostPorts {
		if n.UsedPorts[p] > 0 {
			return rejection{cause: portInUse, port: p}
		}
	}
	return rejection{cause: fits}
}

func (r rejection) describe(req Request) string {
	switch r.cause {
	case notReady:
		return "NotReady"
	case disconnected:
		return "disconnected"
	case wrongKind:
		return fmt.Sprintf("do not run %s", req.Kind)
	case lackCPU:
		return fmt.Sprintf("lack cpu (needs %dm)", req.CPUMillis)
	case lackMemory:
		return fmt.Sprintf("lack memory (needs %dMiB)", req.MemoryMiB)
	case portInUse:
		return fmt.Sprintf("have port %s in use", r.port)
	}
	return "fit"
}

// share is the node's dominant allocated fraction once req is placed on it.
func share(req Request, n *Node) float64 {
	var s float64
	if n.CPUCapacity > 0 {
		s = max(s, float64(n.CPUAllocated+req.CPUMillis)/float64(n.CPUCapacity))
	}
	if n.MemoryCapacity > 0 {
		s = max(s, float64(n.MemoryAllocated+req.MemoryMiB)/float64(n.MemoryCapacity))
	}
	return s
}

// better reports whether node a (score sa) beats node b (score sb).
func better(strategy Strategy, sa float64, a *Node, sb float64, b *Node) bool {
	if sa != sb {
		if strategy == Binpack {
			return sa > sb
		}
		return sa < sb
	}
	if a.Instances != b.Instances {
		if strategy == Binpack {
			return a.Instances > b.Instances
		}
		return a.Instances < b.Instances
	}
	return a.Name < b.Name
}

func summarise(req Request, total int, f *filtered) string {
	if total == 0 {
		return "no node fits: no nodes registered"
	}
	counts := map[string]int{}
	for c, n := range f.causes {
		if n > 0 {
			counts[rejection{cause: cause(c)}.describe(req)] += n
		}
	}
	for p, n := range f.ports {
		counts[rejection{cause: portInUse, port: p}.describe(req)] += n
	}
	whys := make([]string, 0, len(counts))
	for w := range counts {
		whys = append(whys, w)
	}
	slices.SortFunc(whys, func(a, b string) int {
		if counts[a] != counts[b] {
			return counts[b] - counts[a]
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(whys))
	for i, w := range whys {
		parts[i] = fmt.Sprintf("%d %s", counts[w], w)
	}
	noun := "nodes"
	if total == 1 {
		noun = "node"
	}
	return fmt.Sprintf("no node fits: %d %s; %s", total, noun, strings.Join(parts, ", "))
}
