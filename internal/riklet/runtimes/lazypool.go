package runtimes

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	"github.com/rik-org/rik/internal/riklet/podnet"
)

// lazyPool is the node's pod address pool (podnet.OpenPool in dir),
// opened on first use once the node's range is known: at once on a static
// --pod-cidr, with auto once the control plane allocated the node's subnet.
// podnet only uses its allocator once it knows the range itself (the same
// subnet function), so "not known yet" never reaches Owners as "owns
// nothing" there; on its own, Owners before the range is known is empty
// and Release refuses (a lease is never dropped unseen).
type lazyPool struct {
	dir    string
	subnet func(context.Context) (netip.Prefix, error)

	mu   sync.Mutex
	pool podnet.Allocator
}

func newLazyPool(dir string, subnet func(context.Context) (netip.Prefix, error)) *lazyPool {
	return &lazyPool{dir: dir, subnet: subnet}
}

// open returns the pool, opening it if the range is known (never waiting).
func (l *lazyPool) open() (podnet.Allocator, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pool != nil {
		return l.pool, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // peek: the range is known or not, no wait
	cidr, err := l.subnet(ctx)
	if err != nil {
		return nil, fmt.Errorf("opening the pod address pool: %w", err)
	}
	pool, err := podnet.OpenPool(l.dir, cidr)
	if err != nil {
		return nil, err
	}
	l.pool = pool
	return pool, nil
}

func (l *lazyPool) Allocate(owner string) (netip.Prefix, error) {
	p, err := l.open()
	if err != nil {
		return netip.Prefix{}, err
	}
	return p.Allocate(owner)
}

func (l *lazyPool) Release(owner string) error {
	p, err := l.open()
	if err != nil {
		return fmt.Errorf("releasing the address of %s: %w", owner, err)
	}
	return p.Release(owner)
}

func (l *lazyPool) Lookup(owner string) (netip.Prefix, bool) {
	p, err := l.open()
	if err != nil {
		return netip.Prefix{}, false
	}
	return p.Lookup(owner)
}

func (l *lazyPool) Owners() []string {
	p, err := l.open()
	if err != nil {
		return nil
	}
	return p.Owners()
}
