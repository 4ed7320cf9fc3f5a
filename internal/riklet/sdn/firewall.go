package sdn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"sort"
	"strings"

	"github.com/rik-org/rik/internal/workload"
)

// Firewall backends (Config.Firewall).
const (
	FirewallAuto     = "auto"     // nftables when the kernel can do what rik needs, else iptables
	FirewallNftables = "nftables" // rik's own table, programmed over netlink
	FirewallIptables = "iptables" // rik's own chains, programmed with iptables-restore
)

// ParseFirewall checks a --firewall value ("" means auto).
func ParseFirewall(s string) (string, error) {
	switch s {
	case "", FirewallAuto:
		return FirewallAuto, nil
	case FirewallNftables, FirewallIptables:
		return s, nil
	}
	return "", fmt.Errorf("firewall %q: want auto, nftables or iptables: %w", s, ErrInvalid)
}

// firewall is what the Manager needs from the packet filter: rik's base
// rules (masquerade, guards) and its port mappings, rebuilt whole or
// changed by difference. Calls run in the node's network namespace.
type firewall interface {
	// Name is FirewallNftables or FirewallIptables.
	Name() string
	// Sync makes rik's rules exactly what cfg and s ask for: base rules,
	// guards and the mappings of s, no other. Whatever the other backend
	// left is removed, so that a node can switch. Used at start and on
	// reconcile.
	Sync(ctx context.Context, cfg ruleConfig, s state) error
	// Update changes the mappings from prev's to next's, the base rules
	// being what Sync made. It is one transaction.
	Update(ctx context.Context, cfg ruleConfig, prev, next state) error
	// Remove deletes every rule rik put on the node, whichever backend
	// did. It is idempotent.
	Remove(ctx context.Context) error
}

// dnat is one exposed port.
type dnat struct {
	ID   string
	IP   netip.Addr
	Port workload.PortMapping // normalised: Protocol "TCP" or "UDP", TargetPort set
}

// hostPort is what one mapping owns on the node: a protocol and a port.
type hostPort struct {
	Protocol string
	Port     int
}

func (d dnat) key() hostPort { return hostPort{d.Port.Protocol, d.Port.Port} }

func (h hostPort) String() string { return fmt.Sprintf("%s/%d", strings.ToLower(h.Protocol), h.Port) }

// dnats returns the mappings of s, sorted by protocol, port and id.
func dnats(s state) []dnat {
	var out []dnat
	for id, e := range s {
		out = append(out, e.dnats(id)...)
	}
	sortDNAT(out)
	return out
}

// dnats returns the mappings of entry e of instance id.
func (e entry) dnats(id string) []dnat {
	out := make([]dnat, len(e.Ports))
	for i, p := range e.Ports {
		out[i] = dnat{ID: id, IP: e.IP, Port: p}
	}
	return out
}

func sortDNAT(ds []dnat) {
	sort.Slice(ds, func(i, j int) bool {
		a, b := ds[i], ds[j]
		if a.Port.Protocol != b.Port.Protocol {
			return a.Port.Protocol < b.Port.Protocol
		}
		if a.Port.Port != b.Port.Port {
			return a.Port.Port < b.Port.Port
		}
		return a.ID < b.ID
	})
}

// changedDNAT returns the mappings of the instances whose entry differs
// between prev and next, as they are in each: what a change touches,
// however many instances are untouched.
func changedDNAT(prev, next state) (before, after []dnat) {
	for id, p := range prev {
		if n, ok := next[id]; !ok || !p.equal(n) {
			before = append(before, p.dnats(id)...)
		}
	}
	for id, n := range next {
		if p, ok := prev[id]; !ok || !p.equal(n) {
			after = append(after, n.dnats(id)...)
		}
	}
	sortDNAT(before)
	sortDNAT(after)
	return before, after
}

// diffDNAT returns the mappings to delete and to add to go from prev to
// next: a mapping whose owner, address or target port changed is deleted
// and added again. The lists keep the order of prev and next.
func diffDNAT(prev, next []dnat) (del, add []dnat) {
	before := make(map[hostPort]dnat, len(prev))
	for _, d := range prev {
		before[d.key()] = d
	}
	after := make(map[hostPort]dnat, len(next))
	for _, d := range next {
		after[d.key()] = d
	}
	for _, d := range prev {
		if n, ok := after[d.key()]; !ok || n != d {
			del = append(del, d)
		}
	}
	for _, d := range next {
		if p, ok := before[d.key()]; !ok || p != d {
			add = append(add, d)
		}
	}
	return del, add
}

// newFirewall returns the backend cfg.Firewall asks for, in the calling
// thread's network namespace. auto picks nftables when the probe (a
// throwaway table with what rik's needs, created and deleted in one batch)
// passes, iptables otherwise. Either backend gets a handle on the other's
// rules, to remove them.
func newFirewall(ctx context.Context, choice string, log *slog.Logger) (firewall, error) {
	choice, err := ParseFirewall(choice)
	if err != nil {
		return nil, err
	}
	ipt, err := nodeIptables(ctx)
	if err != nil {
		return nil, err
	}
	nft, probeErr := nodeNftables(ctx)
	if choice == FirewallNftables || choice == FirewallAuto && probeErr == nil {
		if probeErr != nil {
			return nil, fmt.Errorf("nftables backend: the kernel cannot program rik's table: %w", probeErr)
		}
		return &nftFirewall{nft: nft, ipt: ipt, log: log}, nil
	}
	switch {
	case ipt == nil && choice == FirewallAuto:
		return nil, fmt.Errorf("no firewall backend: nftables probe failed (%w) and no iptables on PATH", probeErr)
	case ipt == nil:
		return nil, errors.New("iptables backend: no iptables on PATH")
	case choice == FirewallAuto:
		log.Info("nftables not usable, using iptables", "err", probeErr)
	}
	return &iptFirewall{ipt: ipt, nft: nft, log: log}, nil
}

// nodeIptables returns the node's iptables, nil when it has none.
func nodeIptables(ctx context.Context) (iptables, error) {
	if _, err := exec.LookPath("iptables"); err != nil {
		return nil, nil
	}
	ipt, err := detectIptables(ctx)
	if err != nil {
		return nil, err
	}
	return ipt, nil
}

// nodeNftables returns the kernel's nftables when the probe passes, else
// nil and why.
func nodeNftables(ctx context.Context) (nftClient, error) {
	if err := probeNftables(ctx); err != nil {
		return nil, err
	}
	return netlinkNft{}, nil
}

// removeAll deletes rik's nftables table and iptables chains; nil
// handles are skipped.
func removeAll(ctx context.Context, ipt iptables, nft nftClient, log *slog.Logger) error {
	var errs []error
	if nft != nil {
		had, err := nft.Delete(ctx)
		errs = append(errs, err)
		if had {
			log.Info("removed nftables table", "table", "ip "+nftTableName)
		}
	}
	if ipt != nil {
		errs = append(errs, removeChains(ctx, ipt, log, ipChains))
	}
	return errors.Join(errs...)
}

// ifaceMatch is how a device pattern of devices() matches: "rik+" is a
// prefix, anything else one exact name.
func ifaceMatch(dev string) (name string, prefix bool) {
	if p, ok := strings.CutSuffix(dev, "+"); ok {
		return p, true
	}
	return dev, false
}
