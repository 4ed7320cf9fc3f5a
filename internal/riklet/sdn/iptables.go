package sdn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// iptables is what the Manager needs from the packet filter. The real one
// execs iptables; tests use a stateful fake.
type iptables interface {
	// Restore feeds rules to iptables-restore --noflush: every chain the
	// input declares is flushed and refilled, in one transaction per table.
	Restore(ctx context.Context, rules []byte) error
	// Ensure inserts rule at the top of table/chain unless it is there.
	Ensure(ctx context.Context, table, chain string, rule ...string) error
	// HasChain reports whether table/chain exists.
	HasChain(ctx context.Context, table, chain string) (bool, error)
	// Delete deletes the first copy of rule from table/chain, and reports
	// false when there is none.
	Delete(ctx context.Context, table, chain string, rule ...string) (bool, error)
	// DeleteChain flushes and deletes table/chain, which must exist and be
	// the target of no rule.
	DeleteChain(ctx context.Context, table, chain string) error
	// List returns table/chain as iptables -S prints it: the policy of a
	// built-in chain ("-P FORWARD DROP"), then one "-A ..." per rule.
	List(ctx context.Context, table, chain string) ([]string, error)
}

// execIptables runs the iptables binaries of one flavour.
type execIptables struct {
	Flavour     string // "nft" or "legacy"
	IptablesBin string // binary for single rules
	RestoreBin  string // binary for batches
}

// detectIptables finds which flavour the system's `iptables` is (nf_tables
// or legacy) and the matching binaries, so rik's rules live where the
// node's other rules do.
func detectIptables(ctx context.Context) (*execIptables, error) {
	out, err := exec.CommandContext(ctx, "iptables", "--version").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("detecting iptables: %w: %s", err, bytes.TrimSpace(out))
	}
	flavour := "legacy"
	if strings.Contains(string(out), "nf_tables") {
		flavour = "nft"
	}
	return newExecIptables(flavour)
}

// newExecIptables returns a runner for flavour "nft" or "legacy", using
// iptables-<flavour>[-restore] when installed, plain iptables[-restore]
// otherwise.
func newExecIptables(flavour string) (*execIptables, error) {
	if flavour != "nft" && flavour != "legacy" {
		return nil, fmt.Errorf("iptables flavour %q: want nft or legacy", flavour)
	}
	pick := func(names ...string) (string, error) {
		for _, n := range names {
			if p, err := exec.LookPath(n); err == nil {
				return p, nil
			}
		}
		return "", fmt.Errorf("none of %s found on PATH", strings.Join(names, ", "))
	}
	ipt, err := pick("iptables-"+flavour, "iptables")
	if err != nil {
		return nil, fmt.Errorf("finding iptables: %w", err)
	}
	restore, err := pick("iptables-"+flavour+"-restore", "iptables-restore")
	if err != nil {
		return nil, fmt.Errorf("finding iptables-restore: %w", err)
	}
	return &execIptables{Flavour: flavour, IptablesBin: ipt, RestoreBin: restore}, nil
}

func (x *execIptables) Restore(ctx context.Context, rules []byte) error {
	cmd := exec.CommandContext(ctx, x.RestoreBin, "-w", "5", "--noflush")
	cmd.Stdin = bytes.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("running %s: %w: %s", x.RestoreBin, err, bytes.TrimSpace(out))
	}
	return nil
}

func (x *execIptables) Ensure(ctx context.Context, table, chain string, rule ...string) error {
	check := append([]string{"-w", "5", "-t", table, "-C", chain}, rule...)
	out, err := exec.CommandContext(ctx, x.IptablesBin, check...).CombinedOutput()
	if err == nil {
		return nil
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 { // 1: no such rule
		return fmt.Errorf("checking %s %s rule: %w: %s", table, chain, err, bytes.TrimSpace(out))
	}
	insert := append([]string{"-w", "5", "-t", table, "-I", chain, "1"}, rule...)
	if out, err := exec.CommandContext(ctx, x.IptablesBin, insert...).CombinedOutput(); err != nil {
		return fmt.Errorf("inserting %s %s rule: %w: %s", table, chain, err, bytes.TrimSpace(out))
	}
	return nil
}

// run runs the iptables binary with args: found is true when it exits 0,
// false when it exits notFound; anything else is an error.
func (x *execIptables) run(ctx context.Context, notFound int, what string, args ...string) (found bool, err error) {
	args = append([]string{"-w", "5"}, args...)
	out, err := exec.CommandContext(ctx, x.IptablesBin, args...).CombinedOutput()
	if err == nil {
		return true, nil
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == notFound {
		return false, nil
	}
	return false, fmt.Errorf("%s: %w: %s", what, err, bytes.TrimSpace(out))
}

func (x *execIptables) HasChain(ctx context.Context, table, chain string) (bool, error) {
	// -S of a missing chain exits 1 in both flavours.
	return x.run(ctx, 1, fmt.Sprintf("listing %s %s", table, chain), "-t", table, "-S", chain)
}

func (x *execIptables) Delete(ctx context.Context, table, chain string, rule ...string) (bool, error) {
	// A missing rule exits 1 ("Bad rule"); a missing target chain exits 2,
	// which callers avoid by checking HasChain first.
	args := append([]string{"-t", table, "-D", chain}, rule...)
	return x.run(ctx, 1, fmt.Sprintf("deleting %s %s rule", table, chain), args...)
}

func (x *execIptables) DeleteChain(ctx context.Context, table, chain string) error {
	if _, err := x.run(ctx, -1, fmt.Sprintf("flushing %s %s", table, chain), "-t", table, "-F", chain); err != nil {
		return err
	}
	_, err := x.run(ctx, -1, fmt.Sprintf("deleting chain %s %s", table, chain), "-t", table, "-X", chain)
	return err
}

func (x *execIptables) List(ctx context.Context, table, chain string) ([]string, error) {
	out, err := exec.CommandContext(ctx, x.IptablesBin, "-w", "5", "-t", table, "-S", chain).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("listing %s %s: %w: %s", table, chain, err, bytes.TrimSpace(out))
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines, nil
}
