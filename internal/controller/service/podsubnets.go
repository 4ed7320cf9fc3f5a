package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/errdefs"
	"github.com/rik-org/rik/internal/store"
)

// Pod subnets: each node gets one subnet of the cluster CIDR, the first
// time the lease holder sees it, kept in the store under the subnet
// (/podsubnet/10.63.3.0-24 = {node, subnet}): creating that key is the
// claim, so two controllers never hand out one subnet twice. It is never
// released: a node that comes back keeps its subnet. The whole map goes to
// the scheduler, which streams to each node its own and its peers'.

// Defaults of the pod network.
var (
	DefaultClusterCIDR = netip.MustParsePrefix("10.63.0.0/16")
)

// DefaultNodeSubnetBits is the size of a node's pod subnet.
const DefaultNodeSubnetBits = 24

const podSubnetPrefix = "/podsubnet/"

// NetworkSetter is the scheduler's side of the pod subnets (the link).
type NetworkSetter interface {
	// SetNetworks sends the whole map of pod subnets.
	SetNetworks(ctx context.Context, cluster netip.Prefix, subnets map[string]netip.Prefix) error
}

// subnetRecord is the value of a /podsubnet/ key.
type subnetRecord struct {
	Node   string `json:"node"`
	Subnet string `json:"subnet"`
}

func podSubnetKey(p netip.Prefix) string {
	return podSubnetPrefix + strings.ReplaceAll(p.String(), "/", "-")
}

// nextSubnet returns the first /bits subnet of cluster that overlaps none
// of taken; an error wrapping errdefs.ErrUnavailable when none is left.
func nextSubnet(cluster netip.Prefix, bits int, taken []netip.Prefix) (netip.Prefix, error) {
	cluster = cluster.Masked()
	if !cluster.Addr().Is4() || bits < cluster.Bits() || bits > 30 {
		return netip.Prefix{}, fmt.Errorf("pod subnets: /%d subnets of %s: want an IPv4 range and a size between /%d and /30", bits, cluster, cluster.Bits())
	}
	step := uint32(1) << (32 - bits)
	count := uint64(1) << (bits - cluster.Bits())
	base := cluster.Addr().As4()
	start := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	for i := range count {
		n := start + uint32(i)*step
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), bits)
		if !slices.ContainsFunc(taken, p.Overlaps) {
			return p, nil
		}
	}
	return netip.Prefix{}, errdefs.Errorf(errdefs.ErrUnavailable, "pod subnets: every /%d of %s is taken", bits, cluster)
}

// subnetClaim is one stored claim.
type subnetClaim struct {
	node   string
	subnet netip.Prefix
	kv     store.KV
}

// readClaims decodes the stored claims: each node's (its lowest subnet
// when, after a race, it holds several), and the extra ones. An
// unreadable record still holds its subnet (taken) but belongs to nobody.
func readClaims(kvs []store.KV) (byNode map[string]netip.Prefix, taken []netip.Prefix, extra []subnetClaim) {
	byNode = map[string]netip.Prefix{}
	var claims []subnetClaim
	for _, kv := range kvs {
		var r subnetRecord
		p, perr := netip.ParsePrefix(strings.ReplaceAll(strings.TrimPrefix(kv.Key, podSubnetPrefix), "-", "/"))
		if perr != nil {
			continue
		}
		taken = append(taken, p)
		if err := json.Unmarshal(kv.Value, &r); err != nil || r.Node == "" || r.Subnet != p.String() {
			continue
		}
		claims = append(claims, subnetClaim{node: r.Node, subnet: p, kv: kv})
	}
	slices.SortFunc(claims, func(a, b subnetClaim) int { return a.subnet.Addr().Compare(b.subnet.Addr()) })
	for _, c := range claims {
		if _, ok := byNode[c.node]; ok {
			extra = append(extra, c)
			continue
		}
		byNode[c.node] = c.subnet
	}
	return byNode, taken, extra
}

// ensureSubnets gives every node of names that has none a subnet, and
// returns every node's.
func (s *Service) ensureSubnets(ctx context.Context, names []string) (map[string]netip.Prefix, error) {
	kvs, err := s.st.List(ctx, podSubnetPrefix)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", podSubnetPrefix, err)
	}
	byNode, taken, extra := readClaims(kvs)
	for _, c := range extra { // a race of two lease holders: the lowest stays
		if err := s.st.Delete(ctx, c.kv.Key, c.kv.Revision); err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrConflict) {
			s.log.Warn("releasing a duplicate pod subnet", "node", c.node, "subnet", c.subnet, "err", err)
		}
	}
	for _, name := range names {
		if _, ok := byNode[name]; ok || !validNodeName(name) {
			continue
		}
		p, err := s.claimSubnet(ctx, name, &taken)
		if err != nil {
			return byNode, err
		}
		byNode[name] = p
		s.log.Info("pod subnet allocated", "node", name, "subnet", p)
	}
	return byNode, nil
}

// claimSubnet stores a claim on the first free subnet for node, trying the
// next one when another controller took it meanwhile.
func (s *Service) claimSubnet(ctx context.Context, node string, taken *[]netip.Prefix) (netip.Prefix, error) {
	for {
		p, err := nextSubnet(s.cfg.ClusterCIDR, s.cfg.NodeSubnetBits, *taken)
		if err != nil {
			return p, err
		}
		*taken = append(*taken, p)
		data, err := json.Marshal(subnetRecord{Node: node, Subnet: p.String()})
		if err != nil {
			return p, err
		}
		_, err = s.st.Put(ctx, podSubnetKey(p), data, 0)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return p, fmt.Errorf("claiming pod subnet %s for node %s: %w", p, node, err)
		}
		return p, nil
	}
}

// syncNetworks allocates the subnets of new nodes and, when the scheduler's
// view (nodes) differs from the store's, sends it the whole map.
func (s *Service) syncNetworks(ctx context.Context, nodes []api.Node) error {
	ns, ok := s.sched.(NetworkSetter)
	if !ok {
		return nil
	}
	names := make([]string, 0, len(nodes))
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	byNode, err := s.ensureSubnets(ctx, names)
	if len(byNode) == 0 {
		return err
	}
	if !networksDiffer(nodes, byNode) {
		return err
	}
	return errors.Join(err, ns.SetNetworks(ctx, s.cfg.ClusterCIDR, byNode))
}

// networksDiffer reports whether a listed node has another subnet than
// its stored one.
func networksDiffer(nodes []api.Node, byNode map[string]netip.Prefix) bool {
	for _, n := range nodes {
		if p, ok := byNode[n.Name]; ok && n.PodSubnet != p.String() {
			return true
		}
	}
	return false
}
