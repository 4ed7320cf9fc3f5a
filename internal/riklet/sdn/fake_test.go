package sdn

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/rik-org/rik/internal/workload"
)

// fakeIptables is a stateful iptables: tables of chains of rules (the
// text after "-A CHAIN "), with iptables-restore --noflush semantics.
type fakeIptables struct {
	mu          sync.Mutex
	tables      map[string]map[string][]string
	restores    int   // Restore calls
	failRestore error // returned by Restore when set
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
	}}
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
