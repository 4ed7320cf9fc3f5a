package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func open(t testing.TB, pool string, bits int, reserved ...netip.Prefix) (*Pool, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "leases.json")
	p, err := Open(path, mustPrefix(pool), bits, reserved...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return p, path
}

func TestAllocateSequence(t *testing.T) {
	tests := []struct {
		name     string
		pool     string
		bits     int
		reserved []netip.Prefix
		owners   int
		want     []string // blocks in allocation order; "" = ErrExhausted
	}{
		{
			name: "function /30 blocks", pool: "10.62.0.0/16", bits: 30, owners: 3,
			want: []string{"10.62.0.0/30", "10.62.0.4/30", "10.62.0.8/30"},
		},
		{
			name: "pod addresses skip reserved", pool: "10.63.0.0/29", bits: 32,
			reserved: []netip.Prefix{mustPrefix("10.63.0.0/32"), mustPrefix("10.63.0.1/32"), mustPrefix("10.63.0.7/32")},
			owners:   6,
			want:     []string{"10.63.0.2/32", "10.63.0.3/32", "10.63.0.4/32", "10.63.0.5/32", "10.63.0.6/32", ""},
		},
		{
			name: "reserved larger than a block", pool: "10.62.0.0/28", bits: 30,
			reserved: []netip.Prefix{mustPrefix("10.62.0.0/29")}, owners: 3,
			want: []string{"10.62.0.8/30", "10.62.0.12/30", ""},
		},
		{
			name: "reserved outside the pool is ignored", pool: "10.62.0.0/29", bits: 30,
			reserved: []netip.Prefix{mustPrefix("192.168.0.0/16")}, owners: 3,
			want: []string{"10.62.0.0/30", "10.62.0.4/30", ""},
		},
		{
			name: "all reserved", pool: "10.62.0.0/30", bits: 30,
			reserved: []netip.Prefix{mustPrefix("10.0.0.0/8")}, owners: 1,
			want: []string{""},
		},
		{
			name: "ipv6", pool: "fd00:62::/120", bits: 126, owners: 2,
			want: []string{"fd00:62::/126", "fd00:62::4/126"},
		},
		{
			name: "unmasked pool is masked", pool: "10.62.3.7/24", bits: 30, owners: 1,
			want: []string{"10.62.3.0/30"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := open(t, tt.pool, tt.bits, tt.reserved...)
			var got []string
			for i := range tt.owners {
				pfx, err := p.Allocate(fmt.Sprintf("owner-%d", i))
				switch {
				case errors.Is(err, ErrExhausted):
					got = append(got, "")
				case err != nil:
					t.Fatalf("Allocate: %v", err)
				default:
					got = append(got, pfx.String())
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("blocks (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOpenRejectsBadSizes(t *testing.T) {
	tests := []struct {
		pool string
		bits int
	}{
		{"10.62.0.0/16", 8},   // block larger than pool
		{"10.62.0.0/16", 33},  // beyond address length
		{"10.0.0.0/8", 32},    // 2^24 blocks: too many to scan
		{"fd00::/64", 128},    // far too many
		{"10.62.0.0/16", -1},  // nonsense
		{"10.62.0.0/30", 200}, // nonsense
	}
	for _, tt := range tests {
		if _, err := Open(filepath.Join(t.TempDir(), "l.json"), mustPrefix(tt.pool), tt.bits); err == nil {
			t.Errorf("Open(%s, /%d): want error", tt.pool, tt.bits)
		}
	}
	if _, err := Open(filepath.Join(t.TempDir(), "l.json"), netip.Prefix{}, 30); err == nil {
		t.Errorf("Open(zero prefix): want error")
	}
}

func TestSameOwnerSameBlock(t *testing.T) {
	p, _ := open(t, "10.62.0.0/16", 30)
	a, err := p.Allocate("fn-a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Allocate("fn-b"); err != nil {
		t.Fatal(err)
	}
	again, err := p.Allocate("fn-a")
	if err != nil {
		t.Fatal(err)
	}
	if again != a {
		t.Errorf("second Allocate(fn-a) = %s, want %s", again, a)
	}
	if got, ok := p.Lookup("fn-a"); !ok || got != a {
		t.Errorf("Lookup(fn-a) = %s, %v; want %s, true", got, ok, a)
	}
	if _, ok := p.Lookup("nobody"); ok {
		t.Errorf("Lookup(nobody) found a lease")
	}
	if _, err := p.Allocate(""); err == nil {
		t.Errorf("Allocate(\"\"): want error")
	}
}

func TestReleaseAndReuse(t *testing.T) {
	p, _ := open(t, "10.62.0.0/29", 30) // two blocks
	a, _ := p.Allocate("a")
	if _, err := p.Allocate("b"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Allocate("c"); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Allocate(c) on a full pool: err = %v, want ErrExhausted", err)
	}
	if err := p.Release("a"); err != nil {
		t.Fatal(err)
	}
	if err := p.Release("a"); err != nil {
		t.Errorf("second Release(a) = %v, want nil", err)
	}
	if err := p.Release("never-seen"); err != nil {
		t.Errorf("Release(unknown) = %v, want nil", err)
	}
	c, err := p.Allocate("c")
	if err != nil {
		t.Fatalf("Allocate(c) after release: %v", err)
	}
	if c != a {
		t.Errorf("c got %s, want the released %s", c, a)
	}
	if diff := cmp.Diff([]string{"b", "c"}, p.Owners()); diff != "" {
		t.Errorf("Owners (-want +got):\n%s", diff)
	}
}

// RIK leaked one /30 per Function and ran dry after 64; releasing must
// make every block reusable forever.
func TestNeverRunsDryWhenReleased(t *testing.T) {
	p, _ := open(t, "10.62.0.0/24", 30) // 64 blocks
	for i := range 1000 {
		owner := fmt.Sprintf("fn-%d", i)
		if _, err := p.Allocate(owner); err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		if i >= 10 { // keep 10 live at a time
			if err := p.Release(fmt.Sprintf("fn-%d", i-10)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := len(p.Owners()); n != 10 {
		t.Errorf("%d owners, want 10", n)
	}
	for i := range 64 - 10 {
		if _, err := p.Allocate(fmt.Sprintf("fill-%d", i)); err != nil {
			t.Fatalf("filling: %v", err)
		}
	}
	if _, err := p.Allocate("one-too-many"); !errors.Is(err, ErrExhausted) {
		t.Errorf("65th: err = %v, want ErrExhausted", err)
	}
}

func TestReload(t *testing.T) {
	p, path := open(t, "10.62.0.0/16", 30)
	a, _ := p.Allocate("a")
	b, _ := p.Allocate("b")
	if err := p.Release("a"); err != nil {
		t.Fatal(err)
	}

	q, err := Open(path, mustPrefix("10.62.0.0/16"), 30)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if got, ok := q.Lookup("b"); !ok || got != b {
		t.Errorf("reloaded Lookup(b) = %s, %v; want %s", got, ok, b)
	}
	if _, ok := q.Lookup("a"); ok {
		t.Errorf("released lease of a came back after reload")
	}
	c, err := q.Allocate("c")
	if err != nil {
		t.Fatal(err)
	}
	if c != a {
		t.Errorf("after reload c = %s, want freed %s", c, a)
	}
	d, _ := q.Allocate("d")
	if d == b || d == c {
		t.Errorf("after reload d = %s collides with a reloaded lease", d)
	}
}

func TestReloadOtherPoolKeepsForeignLeases(t *testing.T) {
	p, path := open(t, "10.62.0.0/16", 30)
	old, _ := p.Allocate("old")

	q, err := Open(path, mustPrefix("10.70.0.0/16"), 30)
	if err != nil {
		t.Fatalf("reopen with another pool: %v", err)
	}
	if got, ok := q.Lookup("old"); !ok || got != old {
		t.Errorf("foreign lease lost: %s, %v", got, ok)
	}
	n, err := q.Allocate("new")
	if err != nil {
		t.Fatal(err)
	}
	if n != mustPrefix("10.70.0.0/30") {
		t.Errorf("new = %s, want 10.70.0.0/30", n)
	}
	if err := q.Release("old"); err != nil {
		t.Fatal(err)
	}
}

func TestOpenCorruptFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	for _, content := range []string{"{not json", `{"leases":{"a":"banana"}}`} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(path, mustPrefix("10.62.0.0/16"), 30); err == nil {
			t.Errorf("Open(%q): want error", content)
		}
	}
}

func TestPersistFailureRollsBack(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "leases.json")
	p, err := Open(path, mustPrefix("10.62.0.0/29"), 30)
	if err != nil {
		t.Fatal(err)
	}
	// A file where the directory should be makes every save fail.
	if err := os.WriteFile(filepath.Join(dir, "sub"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Allocate("a"); err == nil {
		t.Fatalf("Allocate with an unwritable file: want error")
	}
	if _, ok := p.Lookup("a"); ok {
		t.Errorf("failed allocation left a lease")
	}
	if err := os.Remove(filepath.Join(dir, "sub")); err != nil {
		t.Fatal(err)
	}
	got, err := p.Allocate("b")
	if err != nil {
		t.Fatal(err)
	}
	if got != mustPrefix("10.62.0.0/30") {
		t.Errorf("after a failed allocation b = %s, want the first block", got)
	}
}

func TestConcurrentAllocate(t *testing.T) {
	p, _ := open(t, "10.62.0.0/24", 30)
	var wg sync.WaitGroup
	got := make([]netip.Prefix, 64)
	errs := make([]error, 64)
	for i := range 64 {
		wg.Go(func() { got[i], errs[i] = p.Allocate(fmt.Sprintf("fn-%d", i)) })
	}
	wg.Wait()
	seen := map[netip.Prefix]bool{}
	for i, pfx := range got {
		if errs[i] != nil {
			t.Fatalf("fn-%d: %v", i, errs[i])
		}
		if seen[pfx] {
			t.Errorf("block %s handed out twice", pfx)
		}
		seen[pfx] = true
	}
}

// BenchmarkAllocateRelease measures one lease and its release, each
// persisted (fsync), with 1,000 other leases held.
func BenchmarkAllocateRelease(b *testing.B) {
	p, _ := open(b, "10.62.0.0/16", 30)
	for i := range 1000 {
		if _, err := p.Allocate(fmt.Sprintf("held-%d", i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		owner := fmt.Sprintf("fn-%d", i)
		if _, err := p.Allocate(owner); err != nil {
			b.Fatal(err)
		}
		if err := p.Release(owner); err != nil {
			b.Fatal(err)
		}
	}
}
