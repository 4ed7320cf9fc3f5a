package schedlink

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rik-org/rik/api/proto/workerpb"
	"github.com/rik-org/rik/internal/riklet/fabric"
)

// mapServer serves WatchNetwork with the maps it is given.
type mapServer struct {
	workerpb.UnimplementedWorkerServer
	maps chan *workerpb.NetworkMap
	asks chan string // hostnames asking
}

func (s *mapServer) WatchNetwork(req *workerpb.NetworkRequest, stream grpc.ServerStreamingServer[workerpb.NetworkMap]) error {
	s.asks <- req.GetHostname()
	for {
		select {
		case m := <-s.maps:
			if err := stream.Send(m); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}

// recordingNetwork fails its first Apply, then records.
type recordingNetwork struct {
	mu      sync.Mutex
	calls   int
	applied []fabric.Map
}

func (r *recordingNetwork) Apply(_ context.Context, m fabric.Map) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.calls == 1 {
		return errors.New("netlink busy")
	}
	r.applied = append(r.applied, m)
	return nil
}

func (r *recordingNetwork) last() (fabric.Map, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.applied) == 0 {
		return fabric.Map{}, 0
	}
	return r.applied[len(r.applied)-1], len(r.applied)
}

// serveWorker serves srv on 127.0.0.1 and returns a client connection.
func serveWorker(t *testing.T, srv workerpb.WorkerServer) *grpc.ClientConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	workerpb.RegisterWorkerServer(gs, srv)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestWatchNetworkAppliesMapsAndRetries(t *testing.T) {
	srv := &mapServer{maps: make(chan *workerpb.NetworkMap, 4), asks: make(chan string, 4)}
	conn := serveWorker(t, srv)
	rec := &recordingNetwork{}
	cfg := testConfig(t, conn.Target())
	cfg.Network = rec
	l := New(cfg, nil, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.networkLoop(ctx, workerpb.NewWorkerClient(conn)) }()
	t.Cleanup(func() { cancel(); <-done })

	if got := <-srv.asks; got != "node-1" {
		t.Fatalf("asked as %q", got)
	}
	srv.maps <- &workerpb.NetworkMap{PodSubnet: "10.63.1.0/24", ClusterCidr: "10.63.0.0/16", Peers: []*workerpb.Peer{
		{Name: "node-2", Address: "192.168.1.2", PodSubnet: "10.63.2.0/24"},
		{Name: "bad", Address: "nope", PodSubnet: "10.63.3.0/24"},
	}}
	// The first Apply fails; the same map is applied again.
	eventually(t, func() bool { _, n := rec.last(); return n == 1 }, func() string { return "map applied after a failure" })
	m, _ := rec.last()
	want := fabric.Peer{Name: "node-2", Addr: netip.MustParseAddr("192.168.1.2"), Subnet: netip.MustParsePrefix("10.63.2.0/24")}
	if m.Subnet != netip.MustParsePrefix("10.63.1.0/24") || m.Cluster != netip.MustParsePrefix("10.63.0.0/16") ||
		len(m.Peers) != 1 || m.Peers[0] != want {
		t.Fatalf("applied %+v", m)
	}
	// A new map (the peer left) replaces it.
	srv.maps <- &workerpb.NetworkMap{PodSubnet: "10.63.1.0/24", ClusterCidr: "10.63.0.0/16"}
	eventually(t, func() bool { m, n := rec.last(); return n == 2 && len(m.Peers) == 0 }, func() string { return "second map" })
}

func TestNetworkLoopStopsOnOldScheduler(t *testing.T) {
	conn := serveWorker(t, &workerpb.UnimplementedWorkerServer{})
	cfg := testConfig(t, conn.Target())
	cfg.Network = &recordingNetwork{}
	// Returns (instead of retrying forever) when the method is unknown.
	New(cfg, nil, nil, nil).networkLoop(context.Background(), workerpb.NewWorkerClient(conn))
}
