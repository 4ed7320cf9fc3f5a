// Package ipam hands out fixed-size blocks of an address prefix, one block
// per owner, and keeps the leases in a JSON file so they survive restarts.
//
// A Function gets a /30 (blockBits 30) from 10.62.0.0/16; a Pod gets one
// address (blockBits 32). Blocks are handed out lowest first; a released
// block is free again at once, so the pool never runs dry while owners
// release what they no longer use.
package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/rik-org/rik/internal/atomicfile"
)

// ErrExhausted: every block of the pool is leased or reserved.
var ErrExhausted = errors.New("address pool exhausted")

// maxIndexBits bounds the number of blocks in a pool (2^20) so a scan for a
// free block stays cheap.
const maxIndexBits = 20

// Pool hands out fixed-size blocks of a prefix, one per owner, persisted in
// a JSON file (atomic write). It is safe for concurrent use.
type Pool struct {
	path      string
	pool      netip.Prefix
	blockBits int
	nblocks   uint64

	mu       sync.Mutex
	leases   map[string]netip.Prefix // owner -> block
	used     map[uint64]string       // block index -> owner (leased blocks inside the pool)
	reserved []span                  // block index ranges never handed out
	low      uint64                  // no free block below this index
}

// span is an inclusive range of block indexes.
type span struct{ first, last uint64 }

// file is the on-disk form.
type file struct {
	Pool      string            `json:"pool"`
	BlockBits int               `json:"blockBits"`
	Leases    map[string]string `json:"leases"`
}

// Open loads the pool's leases from path (a missing file is an empty pool)
// and returns a pool handing out /blockBits blocks of pool, never one that
// overlaps a reserved prefix. Leases in the file that lie outside pool (the
// pool was reconfigured) are kept until released but block nothing.
func Open(path string, pool netip.Prefix, blockBits int, reserved ...netip.Prefix) (*Pool, error) {
	if !pool.IsValid() {
		return nil, fmt.Errorf("opening pool %s: invalid prefix", path)
	}
	pool = pool.Masked()
	if blockBits < pool.Bits() || blockBits > pool.Addr().BitLen() {
		return nil, fmt.Errorf("opening pool %s: block size /%d does not fit in %s", path, blockBits, pool)
	}
	if blockBits-pool.Bits() > maxIndexBits {
		return nil, fmt.Errorf("opening pool %s: %s has more than 2^%d blocks of /%d", path, pool, maxIndexBits, blockBits)
	}
	p := &Pool{
		path:      path,
		pool:      pool,
		blockBits: blockBits,
		nblocks:   1 << (blockBits - pool.Bits()),
		leases:    map[string]netip.Prefix{},
		used:      map[uint64]string{},
	}
	for _, r := range reserved {
		if s, ok := p.span(r); ok {
			p.reserved = append(p.reserved, s)
		}
	}
	if err := p.load(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Pool) load() error {
	b, err := os.ReadFile(p.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading pool %s: %w", p.path, err)
	}
	var f file
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("reading pool %s: %w", p.path, err)
	}
	for owner, s := range f.Leases {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("reading pool %s: lease of %q: %w", p.path, owner, err)
		}
		p.leases[owner] = pfx
		if sp, ok := p.span(pfx); ok {
			for i := sp.first; i <= sp.last; i++ {
				p.used[i] = owner
			}
		}
	}
	return nil
}

// Allocate returns owner's block, leasing the lowest free one if owner has
// none. It returns ErrExhausted when no block is free.
func (p *Pool) Allocate(owner string) (netip.Prefix, error) {
	if owner == "" {
		return netip.Prefix{}, errors.New("allocating address: empty owner")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if pfx, ok := p.leases[owner]; ok {
		return pfx, nil
	}
	idx, ok := p.free()
	if !ok {
		return netip.Prefix{}, fmt.Errorf("allocating address for %s from %s: %w", owner, p.pool, ErrExhausted)
	}
	pfx := p.block(idx)
	p.leases[owner] = pfx
	p.used[idx] = owner
	if err := p.save(); err != nil {
		delete(p.leases, owner)
		delete(p.used, idx)
		return netip.Prefix{}, fmt.Errorf("allocating address for %s: %w", owner, err)
	}
	p.low = idx + 1
	return pfx, nil
}

// Release frees owner's block. Releasing an unknown owner is not an error.
func (p *Pool) Release(owner string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	pfx, ok := p.leases[owner]
	if !ok {
		return nil
	}
	delete(p.leases, owner)
	if err := p.save(); err != nil {
		p.leases[owner] = pfx
		return fmt.Errorf("releasing address of %s: %w", owner, err)
	}
	if sp, ok := p.span(pfx); ok {
		for i := sp.first; i <= sp.last; i++ {
			if p.used[i] == owner {
				delete(p.used, i)
				p.low = min(p.low, i)
			}
		}
	}
	return nil
}

// Lookup returns owner's block, if it has one.
func (p *Pool) Lookup(owner string) (netip.Prefix, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pfx, ok := p.leases[owner]
	return pfx, ok
}

// Owners returns the owners holding a lease, sorted.
func (p *Pool) Owners() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.leases))
	for o := range p.leases {
		out = append(out, o)
	}
	sort.Strings(out)
	return out
}

// free returns the lowest block index neither leased nor reserved.
func (p *Pool) free() (uint64, bool) {
	for i := p.low; i < p.nblocks; i++ {
		if _, taken := p.used[i]; taken {
			continue
		}
		if r, ok := p.reservedAt(i); ok {
			i = r.last // skip the whole reserved range
			continue
		}
		return i, true
	}
	return 0, false
}

func (p *Pool) reservedAt(i uint64) (span, bool) {
	for _, r := range p.reserved {
		if i >= r.first && i <= r.last {
			return r, true
		}
	}
	return span{}, false
}

// span returns the range of block indexes that pfx overlaps, if any.
func (p *Pool) span(pfx netip.Prefix) (span, bool) {
	if !pfx.IsValid() || !p.pool.Overlaps(pfx) {
		return span{}, false
	}
	pfx = pfx.Masked()
	if pfx.Bits() <= p.pool.Bits() { // covers the whole pool
		return span{0, p.nblocks - 1}, true
	}
	shift := uint(p.pool.Addr().BitLen() - p.blockBits)
	off := new(big.Int).Sub(toInt(pfx.Addr()), toInt(p.pool.Addr()))
	first := new(big.Int).Rsh(off, shift).Uint64()
	if pfx.Bits() >= p.blockBits {
		return span{first, first}, true
	}
	n := uint64(1) << (p.blockBits - pfx.Bits())
	return span{first, first + n - 1}, true
}

// block returns the prefix of block i.
func (p *Pool) block(i uint64) netip.Prefix {
	shift := uint(p.pool.Addr().BitLen() - p.blockBits)
	n := new(big.Int).Lsh(new(big.Int).SetUint64(i), shift)
	n.Add(n, toInt(p.pool.Addr()))
	return netip.PrefixFrom(fromInt(n, p.pool.Addr().Is4()), p.blockBits)
}

func toInt(a netip.Addr) *big.Int {
	b := a.AsSlice()
	return new(big.Int).SetBytes(b)
}

func fromInt(n *big.Int, is4 bool) netip.Addr {
	if is4 {
		var b [4]byte
		n.FillBytes(b[:])
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	n.FillBytes(b[:])
	return netip.AddrFrom16(b)
}

// save writes the leases atomically: temp file in the same directory,
// fsync, rename. The caller holds p.mu.
func (p *Pool) save() error {
	f := file{Pool: p.pool.String(), BlockBits: p.blockBits, Leases: make(map[string]string, len(p.leases))}
	for o, pfx := range p.leases {
		f.Leases[o] = pfx.String()
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding pool %s: %w", p.path, err)
	}
	if err := os.MkdirAll(filepath.Dir(p.path), 0o700); err != nil {
		return fmt.Errorf("writing %s: %w", p.path, err)
	}
	return atomicfile.Write(p.path, b, 0o600)
}
