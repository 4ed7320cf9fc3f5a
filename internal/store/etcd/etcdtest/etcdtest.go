// Package etcdtest starts an embedded, single-member etcd server for tests,
// listening on 127.0.0.1 ports chosen by the kernel, with its data in a
// temporary directory.
package etcdtest

import (
	"fmt"
	"net/url"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// startTimeout bounds the wait for the server to be ready.
const startTimeout = 30 * time.Second

// Start starts a server stopped when tb ends, and returns its client
// endpoint ("127.0.0.1:port"). It fails tb if the server cannot start.
func Start(tb testing.TB) string {
	tb.Helper()
	return StartIn(tb, tb.TempDir(), Name, "127.0.0.1:0")
}

// Name is the member name of the servers Start starts.
const Name = "rik-test"

// StartIn starts a server stopped when tb ends, member name with its data
// in dir (which may hold a data directory already, e.g. one restored from
// a snapshot) and its peer URL on peerAddr ("127.0.0.1:port"); it returns
// its client endpoint.
func StartIn(tb testing.TB, dir, name, peerAddr string) string {
	tb.Helper()
	endpoint, stop, err := start(dir, name, peerAddr)
	if err != nil {
		tb.Fatalf("starting embedded etcd: %v", err)
	}
	tb.Cleanup(stop)
	return endpoint
}

func start(dir, name, peerAddr string) (string, func(), error) {
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = dir
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.UnsafeNoFsync = true
	local := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	peer := url.URL{Scheme: "http", Host: peerAddr}
	cfg.ListenClientUrls = []url.URL{local}
	cfg.AdvertiseClientUrls = []url.URL{local}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return "", nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return "", nil, err
	case <-time.After(startTimeout):
		e.Close()
		return "", nil, fmt.Errorf("not ready after %v", startTimeout)
	}
	if len(e.Clients) == 0 {
		e.Close()
		return "", nil, fmt.Errorf("no client listener")
	}
	return e.Clients[0].Addr().String(), e.Close, nil
}
