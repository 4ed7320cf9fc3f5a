// Package backend opens the store chosen by configuration: the embedded bolt
// file by default, or etcd when RIK_STORE=etcd://host:port[,host:port].
package backend

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/store/bolt"
	"github.com/rik-org/rik/internal/store/etcd"
)

// Kind names a backend.
type Kind string

const (
	Bolt Kind = "bolt"
	Etcd Kind = "etcd"
)

// Choice is a parsed RIK_STORE setting.
type Choice struct {
	Kind Kind
	// Endpoints ("host:port") for Etcd.
	Endpoints []string
}

// Parse reads a RIK_STORE value: "" or "bolt" for the embedded store,
// "etcd://host:port[,host:port...]" for etcd.
func Parse(storeURL string) (Choice, error) {
	switch storeURL {
	case "", "bolt":
		return Choice{Kind: Bolt}, nil
	}
	rest, ok := strings.CutPrefix(storeURL, "etcd://")
	if !ok {
		return Choice{}, fmt.Errorf("RIK_STORE %q: want \"bolt\" or etcd://host:port[,host:port]", storeURL)
	}
	rest = strings.TrimSuffix(rest, "/")
	var endpoints []string
	for ep := range strings.SplitSeq(rest, ",") {
		host, port, err := net.SplitHostPort(ep)
		if err != nil {
			return Choice{}, fmt.Errorf("RIK_STORE %q: endpoint %q: %w", storeURL, ep, err)
		}
		if host == "" || strings.ContainsAny(host, "/?#@ ") {
			return Choice{}, fmt.Errorf("RIK_STORE %q: endpoint %q: invalid host", storeURL, ep)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return Choice{}, fmt.Errorf("RIK_STORE %q: endpoint %q: invalid port", storeURL, ep)
		}
		endpoints = append(endpoints, ep)
	}
	return Choice{Kind: Etcd, Endpoints: endpoints}, nil
}

// Open opens the store selected by storeURL (RIK_STORE); the bolt store lives
// in the directory databaseLocation (DATABASE_LOCATION).
func Open(ctx context.Context, databaseLocation, storeURL string) (store.Store, error) {
	c, err := Parse(storeURL)
	if err != nil {
		return nil, err
	}
	if c.Kind == Etcd {
		return etcd.Open(ctx, c.Endpoints)
	}
	return bolt.Open(databaseLocation)
}
