package sdn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
)

// maxCopies bounds how many copies of one jump Uninstall deletes, so that
// an iptables that keeps answering "deleted" cannot loop forever.
const maxCopies = 100

// Uninstall removes everything the SDN put on the node, whichever
// firewall backend did: rik's nftables table (ip rik), the jumps to rik's
// iptables chains and the chains (nat RIKLET, RIKLET-POSTROUTING; filter
// RIKLET-FORWARD, RIKLET-INPUT), every rik TAP and, when Config.StateDir
// is set, the state under <StateDir>/sdn/. It touches no other table,
// rule, chain or device, and is idempotent: on a clean node it changes
// nothing. The caller makes sure no instance of the node still runs.
// ip_forward is left as it is (rik cannot know what it was before).
//
// A rule of someone else's jumping to a rik chain is left alone, and that
// chain is then kept (the error says so).
func Uninstall(ctx context.Context, cfg Config) error {
	var (
		ipt iptables  // stays nil without iptables: rik cannot have written rules
		nft nftClient // stays nil when the kernel has no usable nftables: the same
	)
	err := (&Manager{cfg: cfg}).inNetns(func() error {
		var err error
		ipt, err = nodeIptables(ctx)
		nft, _ = nodeNftables(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("uninstalling sdn: %w", err)
	}
	return uninstall(ctx, cfg, ipt, nft, netlinkHost{})
}

// uninstall is Uninstall over given iptables and nftables (nil: none) and
// host.
func uninstall(ctx context.Context, cfg Config, ipt iptables, nft nftClient, host netHost) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{cfg: cfg} // for inNetns
	var errs []error
	errs = append(errs, m.inNetns(func() error { return removeAll(ctx, ipt, nft, log) }))
	errs = append(errs, m.inNetns(func() error {
		taps, err := host.Taps(ctx)
		if err != nil {
			return err
		}
		var errs []error
		for _, tap := range taps {
			log.Info("deleting tap", "tap", tap)
			errs = append(errs, host.DelLink(ctx, tap))
		}
		return errors.Join(errs...)
	}))
	if err := errors.Join(errs...); err != nil {
		// Keep the state: it still describes what is on the node.
		return fmt.Errorf("uninstalling sdn: %w", err)
	}
	if cfg.StateDir != "" {
		if err := os.RemoveAll(filepath.Join(cfg.StateDir, "sdn")); err != nil {
			return fmt.Errorf("uninstalling sdn: removing state: %w", err)
		}
	}
	return nil
}

// removeChains deletes rik's jumps to chains, then the chains. A chain
// that is still the target of a rule after its jumps are gone is kept.
func removeChains(ctx context.Context, ipt iptables, log *slog.Logger, chains []ipChain) error {
	var errs []error
	for _, c := range chains {
		ok, err := ipt.HasChain(ctx, c.table, c.name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !ok {
			continue // no chain, so no jump to it either
		}
		if err := removeJumps(ctx, ipt, c.table, c.name); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := ipt.DeleteChain(ctx, c.table, c.name); err != nil {
			errs = append(errs, fmt.Errorf("removing chain %s %s (is a rule not rik's jumping to it?): %w", c.table, c.name, err))
			continue
		}
		log.Info("removed iptables chain", "table", c.table, "chain", c.name)
	}
	return errors.Join(errs...)
}

// removeJumps deletes every copy of rik's jumps to table/target.
func removeJumps(ctx context.Context, ipt iptables, table, target string) error {
	for _, j := range jumps {
		if j.Table != table || j.Rule[len(j.Rule)-1] != target {
			continue
		}
		for range maxCopies {
			deleted, err := ipt.Delete(ctx, j.Table, j.Chain, j.Rule...)
			if err != nil {
				return err
			}
			if !deleted {
				break
			}
		}
	}
	return nil
}
