package scheduler

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/api/proto/workerpb"
)

// The controller allocates each node's pod subnet and keeps it in its
// store; it hands the whole map to the scheduler (SetNodeNetworks), which
// keeps it in memory (the controller sends it again after a scheduler
// restart: ListNodes shows what the scheduler has) and streams to each node
// its own subnet and its connected peers' (WatchNetwork).

// networkState is the last map the controller sent. Zero value: none yet.
type networkState struct {
	cidr    string
	subnets map[string]string // node name -> pod subnet
	changed chan struct{}     // closed (and replaced) when the map changes
}

// networkRecheck is how often a node's stream recomputes its map, to see
// peers come and go (registration, loss) besides the controller's changes.
const networkRecheck = time.Second

// maxNetworkNodes bounds the map the controller may send.
const maxNetworkNodes = 65536

// parseNetworks checks the controller's map.
func parseNetworks(m *controllerpb.NodeNetworks) (string, map[string]string, error) {
	cidr, err := netip.ParsePrefix(m.GetClusterCidr())
	if err != nil || !cidr.Addr().Is4() {
		return "", nil, fmt.Errorf("cluster_cidr %q: want an IPv4 prefix", m.GetClusterCidr())
	}
	if len(m.GetNodes()) > maxNetworkNodes {
		return "", nil, fmt.Errorf("nodes: more than %d", maxNetworkNodes)
	}
	out := make(map[string]string, len(m.GetNodes()))
	for i, n := range m.GetNodes() {
		if err := checkHostname(n.GetName()); err != nil {
			return "", nil, fmt.Errorf("nodes[%d].name: %w", i, err)
		}
		p, err := netip.ParsePrefix(n.GetPodSubnet())
		if err != nil || p != p.Masked() || !cidr.Contains(p.Addr()) || p.Bits() < cidr.Bits() {
			return "", nil, fmt.Errorf("nodes[%d].pod_subnet %q: want a subnet of %s", i, n.GetPodSubnet(), cidr)
		}
		out[n.GetName()] = p.String()
	}
	return cidr.String(), out, nil
}

// setNetworks replaces the map and wakes the nodes' streams.
func (s *state) setNetworks(cidr string, subnets map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.network.cidr == cidr && maps.Equal(s.network.subnets, subnets) {
		return
	}
	s.network.cidr, s.network.subnets = cidr, subnets
	if s.network.changed != nil {
		close(s.network.changed)
		s.network.changed = nil
	}
}

// networkMap is node name's map now (nil before the controller sent
// one: a restarted scheduler must not tell the nodes to drop their
// routes), and a channel closed at the next change of the controller's map.
func (s *state) networkMap(name string) (*workerpb.NetworkMap, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.network.changed == nil {
		s.network.changed = make(chan struct{})
	}
	if s.network.cidr == "" {
		return nil, s.network.changed
	}
	m := &workerpb.NetworkMap{PodSubnet: s.network.subnets[name], ClusterCidr: s.network.cidr}
	for _, peer := range slices.Sorted(maps.Keys(s.nodes)) {
		n := s.nodes[peer]
		sub := s.network.subnets[peer]
		// Ready, not connected: a riklet restarting keeps its peers'
		// routes to its pods; a node lost (node timeout) loses them.
		if peer == name || sub == "" || n.address == "" || !n.ready {
			continue
		}
		m.Peers = append(m.Peers, &workerpb.Peer{Name: peer, Address: n.address, PodSubnet: sub})
	}
	return m, s.network.changed
}

// SetNodeNetworks takes the controller's map of pod subnets.
func (c *controllerAPI) SetNodeNetworks(_ context.Context, m *controllerpb.NodeNetworks) (*emptypb.Empty, error) {
	cidr, subnets, err := parseNetworks(m)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	c.st.setNetworks(cidr, subnets)
	return &emptypb.Empty{}, nil
}

// WatchNetwork streams the calling node's network map: now, then at every
// change.
func (w *workerAPI) WatchNetwork(req *workerpb.NetworkRequest, stream grpc.ServerStreamingServer[workerpb.NetworkMap]) error {
	who, err := w.node(stream.Context())
	if err != nil {
		return err
	}
	name := req.GetHostname()
	if err := checkHostname(name); err != nil {
		return err
	}
	if err := who.speakAs("hostname", name); err != nil {
		return err
	}
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return fmt.Errorf("accepting network stream of %s: %w", name, err)
	}
	ctx := stream.Context()
	tick := time.NewTicker(networkRecheck)
	defer tick.Stop()
	var last *workerpb.NetworkMap
	for {
		m, changed := w.st.networkMap(name)
		if m != nil && (last == nil || !proto.Equal(m, last)) {
			if err := stream.Send(m); err != nil {
				return err
			}
			last = m
		}
		select {
		case <-changed:
		case <-tick.C:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-w.stop:
			return status.Error(codes.Unavailable, "scheduler shutting down")
		}
	}
}
