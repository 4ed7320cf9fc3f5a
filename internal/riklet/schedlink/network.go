package schedlink

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rik-org/rik/api/proto/workerpb"
	"github.com/rik-org/rik/internal/riklet/fabric"
)

// Network takes the node's network maps (fabric.Fabric).
type Network interface {
	Apply(ctx context.Context, m fabric.Map) error
}

// networkLoop keeps the network stream open until ctx is done; a
// scheduler without it (not rik's, or older) is not asked again.
func (l *Link) networkLoop(ctx context.Context, client workerpb.WorkerClient) {
	l.retryLoop(ctx, "network stream broken, reopening",
		func(ctx context.Context) error { return l.watchNetwork(ctx, client) },
		func(err error) bool {
			if status.Code(err) == codes.Unimplemented {
				l.log.Warn("the scheduler sends no network map: pods of other nodes are not routed")
				return true
			}
			return false
		})
}

// watchNetwork applies each map the scheduler sends; one that fails is
// applied again after a delay until it works or a newer one comes.
func (l *Link) watchNetwork(ctx context.Context, client workerpb.WorkerClient) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.WatchNetwork(ctx, &workerpb.NetworkRequest{Hostname: l.cfg.Hostname})
	if err != nil {
		return fmt.Errorf("opening network stream: %w", err)
	}
	maps := make(chan fabric.Map, 1) // the latest only
	errc := make(chan error, 1)
	go func() { // ends with the stream, which ends with ctx
		for {
			m, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case <-maps:
			default:
			}
			maps <- networkMapOf(m, l.log)
		}
	}()
	var cur fabric.Map
	var retry <-chan time.Time
	for {
		select {
		case cur = <-maps:
		case <-retry:
		case err := <-errc:
			return fmt.Errorf("receiving network map: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
		retry = nil
		if err := l.cfg.Network.Apply(ctx, cur); err != nil {
			l.log.Warn("applying the network map, trying again", "error", err, "in", l.cfg.ConnMax)
			retry = time.After(l.cfg.ConnMax)
		}
	}
}

// networkMapOf converts the scheduler's map; unusable peers are left out.
func networkMapOf(m *workerpb.NetworkMap, log *slog.Logger) fabric.Map {
	var out fabric.Map
	if p, err := netip.ParsePrefix(m.GetPodSubnet()); err == nil {
		out.Subnet = p
	}
	if p, err := netip.ParsePrefix(m.GetClusterCidr()); err == nil {
		out.Cluster = p
	}
	for _, p := range m.GetPeers() {
		a, aerr := netip.ParseAddr(p.GetAddress())
		s, serr := netip.ParsePrefix(p.GetPodSubnet())
		if aerr != nil || serr != nil {
			log.Warn("peer with an unusable address or subnet ignored", "peer", p.GetName(), "address", p.GetAddress(), "subnet", p.GetPodSubnet())
			continue
		}
		out.Peers = append(out.Peers, fabric.Peer{Name: p.GetName(), Addr: a, Subnet: s})
	}
	return out
}
