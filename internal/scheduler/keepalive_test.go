package scheduler

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/keepalive"

	"github.com/rik-org/rik/internal/grpcutil"
)

// clientKeepalive is what riklets and controllers use towards the scheduler.
var clientKeepalive = grpcutil.SchedulerKeepalive

func TestKeepalivePolicyAllowsClients(t *testing.T) {
	if keepaliveEnforcement.MinTime > clientKeepalive.Time {
		t.Errorf("enforcement MinTime %s > client ping interval %s", keepaliveEnforcement.MinTime, clientKeepalive.Time)
	}
	if !keepaliveEnforcement.PermitWithoutStream {
		t.Error("enforcement does not permit pings without streams")
	}
	if got := len(serverOptions(keepaliveParams, keepaliveEnforcement)); got != 2 {
		t.Errorf("serverOptions: %d options, want 2", got)
	}
}

// keptUp reports whether an idle client pinging like the riklets do stays
// connected to a server with policy for d.
func keptUp(t *testing.T, policy keepalive.EnforcementPolicy, d time.Duration) bool {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(serverOptions(keepaliveParams, policy)...)
	go srv.Serve(l)
	defer srv.Stop()
	cc := dial(t, l.Addr(), grpc.WithKeepaliveParams(clientKeepalive))
	cc.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for st := cc.GetState(); st != connectivity.Ready; st = cc.GetState() {
		if !cc.WaitForStateChange(ctx, st) {
			t.Fatal("client never connected")
		}
	}
	// Any change from Ready is the server closing the connection.
	return !cc.WaitForStateChange(ctx, connectivity.Ready)
}

// Real pings over ~45s (a client pings at most every 10s, and a server
// closes the connection at the third ping it finds too early, the first
// ping never counting).
func TestKeepaliveClientNotDisconnected(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 45s")
	}
	t.Parallel()
	const d = 45 * time.Second
	t.Run("scheduler policy", func(t *testing.T) {
		t.Parallel()
		if !keptUp(t, keepaliveEnforcement, d) {
			t.Error("client pinging every 10s disconnected by the scheduler")
		}
	})
	t.Run("grpc default policy", func(t *testing.T) { // the test can tell
		t.Parallel()
		if keptUp(t, keepalive.EnforcementPolicy{}, d) {
			t.Error("client kept up under gRPC's default policy: the test cannot see too_many_pings")
		}
	})
}
