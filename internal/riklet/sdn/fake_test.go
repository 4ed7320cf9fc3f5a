package sdn

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/rik-org/rik/internal/workload"
)

// fakeIptables is a stateful iptables: tables of chains of rules (the
// text after "-A CHAIN "), with iptables-restore --noflush semantics.
type fakeIptables struct {
	mu          sync.Mutex
	tables      map[string]map[string][]string
	policies    map[string]string // "filter/FORWARD" -> "DROP"; ACCEPT when missing
	restores    int               // Restore calls
	failRestore error             // returned by Restore when set
}

func newFakeIptables() *fakeIptables {
	return &fakeIptables{tables: map[string]map[string][]string{
		"nat": {
			"PREROUTING":  {"-m addrtype --dst-type LOCAL -j DOCKER"},
			"INPUT":       nil,
			"OUTPUT":      nil,
			"POSTROUTING": {"-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE"},
			"DOCKER":      {"-i docker0 -j RETURN"},
		},
		"filter": {
			"INPUT":   {"-j ACCEPT"},
			"FORWARD": {"-j DOCKER-USER"},
			"OUTPUT":  nil,
			"DOCKER-USER": {
				"-j RETURN",
			},
		},
	}, policies: map[string]string{}}
}

func (f *fakeIptables) Restore(ctx context.Context, rules []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restores++
	if f.failRestore != nil {
		return f.failRestore
	}
	var (
		table string
		work  map[string][]string
	)
	sc := bufio.NewScanner(bytes.NewReader(rules))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "*"):
			table = line[1:]
			if _, ok := f.tables[table]; !ok {
				return fmt.Errorf("no table %s", table)
			}
			work = map[string][]string{}
			for c, r := range f.tables[table] {
				work[c] = slices.Clone(r)
			}
		case strings.HasPrefix(line, ":"):
			name := strings.Fields(line[1:])[0]
			work[name] = nil // create or flush
		case strings.HasPrefix(line, "-A "):
			parts := strings.SplitN(line, " ", 3)
			if _, ok := work[parts[1]]; !ok {
				return fmt.Errorf("line %q: no chain %s", line, parts[1])
			}
			work[parts[1]] = append(work[parts[1]], parts[2])
		case line == "COMMIT":
			f.tables[table] = work
			table, work = "", nil
		default:
			return fmt.Errorf("fake iptables-restore: unsupported line %q", line)
		}
	}
	if table != "" {
		return fmt.Errorf("table %s not committed", table)
	}
	return nil
}

func (f *fakeIptables) Ensure(ctx context.Context, table, chain string, rule ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tables[table]
	if !ok {
		return fmt.Errorf("no table %s", table)
	}
	rules, ok := t[chain]
	if !ok {
		return fmt.Errorf("no chain %s/%s", table, chain)
	}
	if i := slices.Index(rule, "-j"); i >= 0 && i+1 < len(rule) {
		builtin := map[string]bool{"ACCEPT": true, "DROP": true, "RETURN": true, "MASQUERADE": true, "DNAT": true}
		if _, ok := t[rule[i+1]]; !ok && !builtin[rule[i+1]] {
			return fmt.Errorf("jump to missing chain %s", rule[i+1])
		}
	}
	r := strings.Join(rule, " ")
	if slices.Contains(rules, r) {
		return nil
	}
	t[chain] = append([]string{r}, rules...)
	return nil
}

func (f *fakeIptables) HasChain(ctx context.Context, table, chain string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tables[table]
	if !ok {
		return false, fmt.Errorf("no table %s", table)
	}
	_, ok = t[chain]
	return ok, nil
}

func (f *fakeIptables) Delete(ctx context.Context, table, chain string, rule ...string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tables[table]
	if !ok {
		return false, fmt.Errorf("no table %s", table)
	}
	rules, ok := t[chain]
	if !ok {
		return false, fmt.Errorf("no chain %s/%s", table, chain)
	}
	if i := slices.Index(rule, "-j"); i >= 0 && i+1 < len(rule) {
		if _, ok := t[rule[i+1]]; !ok {
			return false, fmt.Errorf("deleting a jump to missing chain %s", rule[i+1]) // real iptables: exit 2
		}
	}
	i := slices.Index(rules, strings.Join(rule, " "))
	if i < 0 {
		return false, nil
	}
	t[chain] = slices.Delete(slices.Clone(rules), i, i+1)
	return true, nil
}

func (f *fakeIptables) DeleteChain(ctx context.Context, table, chain string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tables[table]
	if !ok {
		return fmt.Errorf("no table %s", table)
	}
	if _, ok := t[chain]; !ok {
		return fmt.Errorf("no chain %s/%s", table, chain)
	}
	for name, rules := range t {
		for _, r := range rules {
			if strings.HasSuffix(r, "-j "+chain) || strings.Contains(r, "-j "+chain+" ") {
				return fmt.Errorf("chain %s/%s is the target of %q in %s", table, chain, r, name)
			}
		}
	}
	delete(t, chain)
	return nil
}

func (f *fakeIptables) List(ctx context.Context, table, chain string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rules, ok := f.tables[table][chain]
	if !ok {
		return nil, fmt.Errorf("no chain %s/%s", table, chain)
	}
	var out []string
	if chain == strings.ToUpper(chain) { // a built-in chain
		policy := f.policies[table+"/"+chain]
		if policy == "" {
			policy = "ACCEPT"
		}
		out = append(out, "-P "+chain+" "+policy)
	}
	for _, r := range rules {
		out = append(out, "-A "+chain+" "+r)
	}
	return out, nil
}

// snapshot returns a deep copy of every table.
func (f *fakeIptables) snapshot() map[string]map[string][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]map[string][]string{}
	for tn, t := range f.tables {
		out[tn] = map[string][]string{}
		for c, r := range t {
			out[tn][c] = slices.Clone(r)
		}
	}
	return out
}

// chain returns a copy of a chain's rules.
func (f *fakeIptables) chain(table, chain string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.tables[table][chain])
}

func (f *fakeIptables) restoreCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.restores
}

// fakeHost is a stateful netHost: links by name with their address, and
// sysctls.
type fakeHost struct {
	mu       sync.Mutex
	links    map[string]fakeLink
	sysctls  map[string]string
	failAdd  error
	failDel  error
	addCalls int
	delCalls int
	// listening: ports with a socket listening on them, like portKey.
	listening map[string]bool
}

type fakeLink struct {
	tap  bool
	addr netip.Prefix
	up   bool
}

func newFakeHost() *fakeHost {
	return &fakeHost{
		links: map[string]fakeLink{
			"lo":   {},
			"eth0": {},
			"rik0": {}, // the pod bridge: never a TAP of rik's
		},
		sysctls: map[string]string{},
	}
}

func (h *fakeHost) AddTap(ctx context.Context, name string, addr netip.Prefix) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.addCalls++
	if h.failAdd != nil {
		return false, h.failAdd
	}
	l, ok := h.links[name]
	if ok && !l.tap {
		return false, fmt.Errorf("creating tap %s: a non-tap device has that name", name)
	}
	h.links[name] = fakeLink{tap: true, addr: addr, up: true}
	return !ok, nil
}

func (h *fakeHost) DelLink(ctx context.Context, name string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.delCalls++
	if h.failDel != nil {
		return h.failDel
	}
	delete(h.links, name)
	return nil
}

func (h *fakeHost) Taps(ctx context.Context) ([]string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for name, l := range h.links {
		if l.tap && IsTapName(name) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (h *fakeHost) SetSysctl(ctx context.Context, key, value string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if strings.HasPrefix(key, "net/ipv4/conf/") || strings.HasPrefix(key, "net/ipv6/conf/") {
		dev := strings.Split(key, "/")[3]
		if _, ok := h.links[dev]; !ok && dev != "all" && dev != "default" {
			return fmt.Errorf("setting sysctl %s: %w", key, os.ErrNotExist)
		}
	}
	h.sysctls[key] = value
	return nil
}

func (h *fakeHost) ListeningPorts(ctx context.Context) (map[string]bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.listening), nil
}

// listen marks a port as having a listening socket.
func (h *fakeHost) listen(proto string, port int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.listening == nil {
		h.listening = map[string]bool{}
	}
	h.listening[portKey(workload.PortMapping{Protocol: proto, Port: port})] = true
}

func (h *fakeHost) link(name string) (fakeLink, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	l, ok := h.links[name]
	return l, ok
}

func (h *fakeHost) sysctl(key string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sysctls[key]
}

// fakeNft is a stateful nftClient: rik's table (nil when there is none)
// with its port map, under the kernel's rules for element changes.
type fakeNft struct {
	mu      sync.Mutex
	table   *fakeNftTable
	batches int   // transactions sent
	changed int   // elements deleted and added by the last Update
	fail    error // returned by every transaction when set
}

type fakeNftTable struct {
	cfg   ruleConfig
	elems map[hostPort]dnat // by dnat.key()
}

func (f *fakeNft) Replace(ctx context.Context, t nftTable) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.batches++
	if f.fail != nil {
		return f.fail
	}
	next := &fakeNftTable{cfg: t.Cfg, elems: map[hostPort]dnat{}}
	for _, d := range t.Mappings {
		if _, dup := next.elems[d.key()]; dup {
			return fmt.Errorf("adding %s twice: %w", d.key(), syscall.EEXIST)
		}
		next.elems[d.key()] = d
	}
	f.table = next
	return nil
}

func (f *fakeNft) Update(ctx context.Context, del, add []dnat) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.batches++
	if f.fail != nil {
		return f.fail
	}
	if f.table == nil {
		return fmt.Errorf("map ports: %w", syscall.ENOENT)
	}
	elems := maps.Clone(f.table.elems)
	for _, d := range del {
		if _, ok := elems[d.key()]; !ok {
			return fmt.Errorf("deleting %s: %w", d.key(), syscall.ENOENT)
		}
		delete(elems, d.key())
	}
	for _, d := range add {
		if cur, ok := elems[d.key()]; ok && cur != d {
			return fmt.Errorf("adding %s: %w", d.key(), syscall.EEXIST)
		}
		elems[d.key()] = d
	}
	f.table.elems = elems
	f.changed = len(del) + len(add)
	return nil
}

func (f *fakeNft) Mappings(ctx context.Context) ([]dnat, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.table == nil {
		return nil, fmt.Errorf("table ip rik: %w", os.ErrNotExist)
	}
	return slices.Collect(maps.Values(f.table.elems)), nil
}

func (f *fakeNft) Delete(ctx context.Context) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	had := f.table != nil
	f.table = nil
	return had, nil
}

// testBackend is one firewall backend over stateful fakes: the iptables
// backend (with the nftables table it removes), or the nftables backend
// (with the iptables it keeps RIKLET-FORWARD in).
type testBackend struct {
	name string
	fw   firewall
	ipt  *fakeIptables
	nft  *fakeNft
}

func newTestBackend(name string) *testBackend {
	b := &testBackend{name: name, ipt: newFakeIptables(), nft: &fakeNft{}}
	if name == FirewallIptables {
		b.fw = &iptFirewall{ipt: b.ipt, nft: b.nft, log: discard}
	} else {
		b.fw = &nftFirewall{nft: b.nft, ipt: b.ipt, log: discard}
	}
	return b
}

var discard = slog.New(slog.DiscardHandler)

// forEachBackend runs fn once per firewall backend.
func forEachBackend(t *testing.T, fn func(t *testing.T, b *testBackend)) {
	for _, name := range []string{FirewallIptables, FirewallNftables} {
		t.Run(name, func(t *testing.T) { fn(t, newTestBackend(name)) })
	}
}

// reboot returns the same backend as found by a riklet that restarts
// after the node rebooted: nothing programmed.
func (b *testBackend) reboot() *testBackend { return newTestBackend(b.name) }

var dnatRule = regexp.MustCompile(`^-p (tcp|udp) -m (?:tcp|udp) --dport (\d+) -m comment --comment "rik:([^"]+)" -j DNAT --to-destination (\S+)$`)

// mappings lists the port mappings the backend holds, like
// "tcp 8080 -> 10.62.0.1:80 fn-a", sorted.
func (b *testBackend) mappings(t *testing.T) []string {
	t.Helper()
	var out []string
	if b.name == FirewallIptables {
		for _, r := range b.ipt.chain("nat", chainDNAT) {
			m := dnatRule.FindStringSubmatch(r)
			if m == nil {
				t.Fatalf("unexpected rule in %s: %q", chainDNAT, r)
			}
			out = append(out, fmt.Sprintf("%s %s -> %s %s", m[1], m[2], m[4], m[3]))
		}
	} else {
		ds, err := b.nft.Mappings(context.Background())
		if err != nil {
			return nil
		}
		for _, d := range ds {
			out = append(out, fmt.Sprintf("%s %d -> %s %s", strings.ToLower(d.Port.Protocol), d.Port.Port,
				netip.AddrPortFrom(d.IP, uint16(d.Port.TargetPort)), d.ID))
		}
	}
	sort.Strings(out)
	return out
}

// applies counts the transactions sent: iptables-restore runs or netlink
// batches.
func (b *testBackend) applies() int {
	if b.name == FirewallIptables {
		return b.ipt.restoreCount()
	}
	b.nft.mu.Lock()
	defer b.nft.mu.Unlock()
	return b.nft.batches
}

// failApplies makes every transaction fail with err; nil heals.
func (b *testBackend) failApplies(err error) {
	b.ipt.mu.Lock()
	b.ipt.failRestore = err
	b.ipt.mu.Unlock()
	b.nft.mu.Lock()
	b.nft.fail = err
	b.nft.mu.Unlock()
}
