package sdn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// nftFirewall is the nftables backend: rik's own table (nft_rules.go),
// replaced whole by Sync, its port map changed element by element by
// Update, so a change costs one small netlink batch whatever the number
// of mappings.
//
// When the node's iptables (either flavour) has a FORWARD chain that may
// drop, rik's traffic would be dropped there whatever rik's table says
// (an accept ends one base chain, not the packet's path): Sync then also
// keeps the iptables backend's RIKLET-FORWARD chain and its jump, as the
// iptables backend does. Every other iptables chain of rik's is removed.
type nftFirewall struct {
	nft nftClient
	ipt iptables // nil without iptables on the node
	log *slog.Logger
}

func (f *nftFirewall) Name() string { return FirewallNftables }

func (f *nftFirewall) Sync(ctx context.Context, cfg ruleConfig, s state) error {
	want := dnats(s)
	f.logDrift(ctx, want)
	if err := f.nft.Replace(ctx, nftTable{Cfg: cfg, Mappings: want}); err != nil {
		return fmt.Errorf("writing rik's nftables table: %w", err)
	}
	if f.ipt == nil {
		return nil
	}
	return f.syncIptables(ctx, cfg)
}

// logDrift logs the mappings Sync is about to remove (with the instance
// that put them there, from the element's comment) or restore.
func (f *nftFirewall) logDrift(ctx context.Context, want []dnat) {
	have, err := f.nft.Mappings(ctx)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		f.log.Warn("reading rik's port map", "err", err)
		return
	}
	del, add := diffDNAT(have, want)
	for _, d := range del {
		f.log.Info("removing a port mapping nobody owns", "mapping", d.key().String(), "owner", d.ID, "to", d.IP)
	}
	for _, d := range add {
		f.log.Info("restoring a port mapping", "mapping", d.key().String(), "owner", d.ID, "to", d.IP)
	}
}

// syncIptables keeps RIKLET-FORWARD in iptables exactly when the node's
// FORWARD chain may drop, and removes rik's other iptables chains.
func (f *nftFirewall) syncIptables(ctx context.Context, cfg ruleConfig) error {
	lines, err := f.ipt.List(ctx, "filter", "FORWARD")
	if err != nil {
		return err
	}
	if !forwardMayDrop(lines) {
		return removeChains(ctx, f.ipt, f.log, ipChains)
	}
	if err := f.ipt.Restore(ctx, renderForward(cfg)); err != nil {
		return fmt.Errorf("writing %s: %w", chainForward, err)
	}
	forward := []ipChain{{"filter", chainForward}}
	if err := ensureJumps(ctx, f.ipt, forward); err != nil {
		return err
	}
	var others []ipChain
	for _, c := range ipChains {
		if c != forward[0] {
			others = append(others, c)
		}
	}
	return removeChains(ctx, f.ipt, f.log, others)
}

// forwardMayDrop reports whether a FORWARD chain listed by iptables -S
// may drop forwarded traffic: a policy other than ACCEPT, or any rule
// besides rik's jump.
func forwardMayDrop(lines []string) bool {
	var own string
	for _, j := range jumps {
		if j.Table == "filter" && j.Chain == "FORWARD" {
			own = "-A FORWARD " + strings.Join(j.Rule, " ")
		}
	}
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "-P FORWARD "):
			if strings.TrimPrefix(l, "-P FORWARD ") != "ACCEPT" {
				return true
			}
		case l != own:
			return true
		}
	}
	return false
}

func (f *nftFirewall) Update(ctx context.Context, _ ruleConfig, prev, next state) error {
	del, add := diffDNAT(changedDNAT(prev, next))
	if len(del)+len(add) == 0 {
		return nil
	}
	return f.nft.Update(ctx, del, add)
}

func (f *nftFirewall) Remove(ctx context.Context) error { return removeAll(ctx, f.ipt, f.nft, f.log) }
