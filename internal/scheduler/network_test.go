package scheduler

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/api/proto/workerpb"
	"github.com/rik-org/rik/internal/scheduler/placement"
)

func TestParseNetworks(t *testing.T) {
	nn := func(cidr string, nodes ...string) *controllerpb.NodeNetworks {
		m := &controllerpb.NodeNetworks{ClusterCidr: cidr}
		for i := 0; i+1 < len(nodes); i += 2 {
			m.Nodes = append(m.Nodes, &controllerpb.NodeNetwork{Name: nodes[i], PodSubnet: nodes[i+1]})
		}
		return m
	}
	tests := []struct {
		name string
		in   *controllerpb.NodeNetworks
		ok   bool
	}{
		{"empty map", nn("10.63.0.0/16"), true},
		{"two nodes", nn("10.63.0.0/16", "a", "10.63.0.0/24", "b", "10.63.1.0/24"), true},
		{"no cluster", nn(""), false},
		{"ipv6 cluster", nn("fd00::/64"), false},
		{"subnet outside", nn("10.63.0.0/16", "a", "10.64.0.0/24"), false},
		{"subnet larger than the cluster", nn("10.63.0.0/16", "a", "10.0.0.0/8"), false},
		{"subnet not masked", nn("10.63.0.0/16", "a", "10.63.0.7/24"), false},
		{"no name", nn("10.63.0.0/16", "", "10.63.0.0/24"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := parseNetworks(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("parseNetworks: %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// TestWatchNetwork: a node gets its subnet and its peers' once the
// controller sent them, which ListNodes then shows.
func TestWatchNetwork(t *testing.T) {
	h := startScheduler(t, Config{NodeTimeout: time.Minute})
	reg := func(name, addr string) *fakeNode {
		return h.registerWith(&commonpb.WorkerRegistration{Hostname: name, Address: addr,
			Capacity: &commonpb.Resources{CpuMillis: 1000, MemoryMib: 1024}, Kinds: []string{"pod"}})
	}
	reg("n1", "192.168.1.1")
	reg("n2", "192.168.1.2")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := h.worker.WatchNetwork(ctx, &workerpb.NetworkRequest{Hostname: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	// Nothing is sent before the controller's map: a restarted scheduler
	// does not make the nodes drop their routes.
	_, err = h.ctrl.SetNodeNetworks(ctx, &controllerpb.NodeNetworks{ClusterCidr: "10.63.0.0/16", Nodes: []*controllerpb.NodeNetwork{
		{Name: "n1", PodSubnet: "10.63.0.0/24"}, {Name: "n2", PodSubnet: "10.63.1.0/24"}}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if m.GetPodSubnet() != "10.63.0.0/24" || m.GetClusterCidr() != "10.63.0.0/16" || len(m.GetPeers()) != 1 ||
		m.GetPeers()[0].GetName() != "n2" || m.GetPeers()[0].GetAddress() != "192.168.1.2" || m.GetPeers()[0].GetPodSubnet() != "10.63.1.0/24" {
		t.Fatalf("map: %v", m)
	}
	list, err := h.ctrl.ListNodes(ctx, &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range list.GetNodes() {
		if n.GetPodSubnet() == "" {
			t.Errorf("ListNodes: %s without its pod subnet", n.GetName())
		}
	}
	// A bad map is refused and changes nothing.
	_, err = h.ctrl.SetNodeNetworks(ctx, &controllerpb.NodeNetworks{ClusterCidr: "nope"})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad map: %v, want InvalidArgument", err)
	}
}

func TestWatchNetworkNeedsHostname(t *testing.T) {
	h := startScheduler(t, Config{})
	stream, err := h.worker.WatchNetwork(context.Background(), &workerpb.NetworkRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("WatchNetwork without hostname: %v", err)
	}
}

// TestNetworkMapPeers: the peers are the ready nodes with an address and
// a subnet; a node whose stream ended stays (a riklet restarting), a lost
// one goes; no map before the controller's.
func TestNetworkMapPeers(t *testing.T) {
	s := newState(testLogger(t), placement.Spread, time.Minute, 0, time.Now)
	conns := map[string]*workerConn{}
	for name, addr := range map[string]string{"n1": "192.168.1.1", "n2": "192.168.1.2", "n3": "192.168.1.3", "noaddr": ""} {
		c, err := s.register(&commonpb.WorkerRegistration{Hostname: name, Address: addr}, "")
		if err != nil {
			t.Fatal(err)
		}
		conns[name] = c
	}
	if m, _ := s.networkMap("n1"); m != nil {
		t.Fatalf("map before the controller's: %v", m)
	}
	s.setNetworks("10.63.0.0/16", map[string]string{"n1": "10.63.0.0/24", "n2": "10.63.1.0/24", "n3": "10.63.2.0/24", "noaddr": "10.63.3.0/24"})
	peers := func() []string {
		m, _ := s.networkMap("n1")
		var out []string
		for _, p := range m.GetPeers() {
			out = append(out, p.GetName())
		}
		return out
	}
	if got := peers(); !slices.Equal(got, []string{"n2", "n3"}) {
		t.Fatalf("peers %v", got)
	}
	s.disconnect("n2", conns["n2"])
	s.mu.Lock()
	s.nodeLost(s.nodes["n3"], time.Now())
	s.mu.Unlock()
	if got := peers(); !slices.Equal(got, []string{"n2"}) {
		t.Fatalf("peers after n2 disconnected and n3 was lost: %v", got)
	}
}
