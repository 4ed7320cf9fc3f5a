package sdn

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
)

// iptFirewall is the iptables backend: rik's four chains (rules.go),
// rewritten whole by one iptables-restore --noflush batch per change.
type iptFirewall struct {
	ipt iptables
	nft nftClient // nil when the kernel has no usable nftables
	log *slog.Logger
}

func (f *iptFirewall) Name() string { return FirewallIptables }

func (f *iptFirewall) Sync(ctx context.Context, cfg ruleConfig, s state) error {
	if err := f.ipt.Restore(ctx, render(cfg, s)); err != nil {
		return fmt.Errorf("writing rik chains: %w", err)
	}
	if err := ensureJumps(ctx, f.ipt, ipChains); err != nil {
		return err
	}
	if f.nft == nil {
		return nil
	}
	had, err := f.nft.Delete(ctx)
	if err != nil {
		return fmt.Errorf("removing the nftables backend's table: %w", err)
	}
	if had {
		f.log.Info("removed the nftables backend's table", "table", "ip "+nftTableName)
	}
	return nil
}

func (f *iptFirewall) Update(ctx context.Context, cfg ruleConfig, _, next state) error {
	if err := f.ipt.Restore(ctx, render(cfg, next)); err != nil {
		return fmt.Errorf("writing rik chains: %w", err)
	}
	return nil
}

func (f *iptFirewall) Remove(ctx context.Context) error { return removeAll(ctx, f.ipt, f.nft, f.log) }

// ensureJumps makes sure the jumps to chains are in the built-in chains.
func ensureJumps(ctx context.Context, ipt iptables, chains []ipChain) error {
	for _, j := range jumps {
		if !slices.Contains(chains, ipChain{j.Table, j.Rule[len(j.Rule)-1]}) {
			continue
		}
		if err := ipt.Ensure(ctx, j.Table, j.Chain, j.Rule...); err != nil {
			return err
		}
	}
	return nil
}
