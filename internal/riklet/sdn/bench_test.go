package sdn

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/rik-org/rik/internal/testutil"
	"github.com/rik-org/rik/internal/testutil/netns"
	"github.com/rik-org/rik/internal/workload"
)

// benchState returns a state of n pods exposing one port each.
func benchState(n int) state {
	st := state{}
	for i := range n {
		st[fmt.Sprintf("pod-%d", i)] = entry{Kind: workload.KindPod, IP: netip.MustParseAddr("10.63.0.2"),
			Ports: []workload.PortMapping{{Port: 20000 + i, TargetPort: 80, Protocol: "TCP"}}}
	}
	return st
}

// BenchmarkRender is the pure part of a change: the text of rik's chains.
func BenchmarkRender(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		st := benchState(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				render(testRuleConfig, st)
			}
		})
	}
}

// BenchmarkProgram programs n DNAT mappings into RIKLET of a fresh network
// namespace, either as one iptables-restore batch or one iptables exec per
// rule, with each iptables flavour installed. Root only.
func BenchmarkProgram(b *testing.B) {
	testutil.RequireRoot(b)
	for _, flavour := range []string{"nft", "legacy"} {
		if ipt := benchIptables(b, flavour); ipt != nil {
			b.Run(flavour, func(b *testing.B) { benchmarkProgram(b, ipt) })
		}
	}
}

// benchIptables returns the iptables of flavour, nil when not installed.
func benchIptables(b *testing.B, flavour string) *execIptables {
	if _, err := exec.LookPath("iptables-" + flavour); err != nil {
		return nil
	}
	ipt, err := newExecIptables(flavour)
	if err != nil {
		b.Fatal(err)
	}
	return ipt
}

func benchmarkProgram(b *testing.B, ipt *execIptables) {
	ctx := context.Background()
	for _, n := range []int{1, 100, 1000} {
		st := benchState(n)
		rules := render(testRuleConfig, st)
		b.Run(fmt.Sprintf("batch/%d", n), func(b *testing.B) {
			ns := netns.New(b)
			for b.Loop() {
				if err := ns.Do(func() error { return ipt.Restore(ctx, rules) }); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("per-rule/%d", n), func(b *testing.B) {
			ns := netns.New(b)
			if err := ns.Do(func() error { return ipt.Restore(ctx, rules) }); err != nil { // creates the chains
				b.Fatal(err)
			}
			var lines [][]string
			for _, l := range strings.Split(string(rules), "\n") {
				if strings.HasPrefix(l, "-A RIKLET ") {
					args := strings.Fields(strings.ReplaceAll(l, `"`, ""))
					lines = append(lines, append([]string{"-w", "5", "-t", "nat"}, args...))
				}
			}
			for b.Loop() {
				err := ns.Do(func() error {
					if out, err := exec.Command(ipt.IptablesBin, "-t", "nat", "-F", chainDNAT).CombinedOutput(); err != nil {
						return fmt.Errorf("%w: %s", err, out)
					}
					for _, args := range lines {
						if out, err := exec.Command(ipt.IptablesBin, args...).CombinedOutput(); err != nil {
							return fmt.Errorf("%w: %s", err, out)
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSaveState is the state file write every change makes before
// programming it (JSON, written, synced and renamed).
func BenchmarkSaveState(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		st := benchState(n)
		path := b.TempDir() + "/state.json"
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				if err := saveState(path, st); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchBackends are the real firewall backends of this machine: nftables
// when the kernel takes rik's table, iptables in each installed flavour.
func benchBackends(b *testing.B) map[string]firewall {
	out := map[string]firewall{}
	ns := netns.New(b)
	if err := ns.Do(func() error { return probeNftables(context.Background()) }); err == nil {
		out["nftables"] = &nftFirewall{nft: netlinkNft{}, log: discard}
	} else {
		b.Logf("no nftables: %v", err)
	}
	for _, flavour := range []string{"nft", "legacy"} {
		if ipt := benchIptables(b, flavour); ipt != nil {
			out["iptables-"+flavour] = &iptFirewall{ipt: ipt, log: discard}
		}
	}
	return out
}

// BenchmarkMappingChange is one port mapping change, added then removed
// (two changes per op), with n mappings already present, side by side for
// every backend: "manager" is what a riklet pays (Expose + Unexpose, the
// state file written and synced each time), "firewall" the backend's batch
// alone. Root only, each in a fresh network namespace.
func BenchmarkMappingChange(b *testing.B) {
	testutil.RequireRoot(b)
	ctx := context.Background()
	backends := benchBackends(b)
	for _, name := range []string{"nftables", "iptables-nft", "iptables-legacy"} {
		fw, ok := backends[name]
		if !ok {
			continue
		}
		for _, n := range []int{1, 100, 1000} {
			b.Run(fmt.Sprintf("%s/manager/present=%d", name, n), func(b *testing.B) {
				ns := netns.New(b)
				m, err := newManager(ctx, Config{StateDir: b.TempDir(), Netns: ns.Path}, fw, netlinkHost{})
				if err != nil {
					b.Fatal(err)
				}
				m.mu.Lock()
				err = m.commit(ctx, benchState(n))
				m.mu.Unlock()
				if err != nil {
					b.Fatal(err)
				}
				ip := netip.MustParseAddr("10.63.0.3")
				ports := []workload.PortMapping{{Port: 8080, TargetPort: 80}}
				for b.Loop() {
					if err := m.Expose(ctx, "bench", ip, ports); err != nil {
						b.Fatal(err)
					}
					if err := m.Unexpose(ctx, "bench"); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(fmt.Sprintf("%s/firewall/present=%d", name, n), func(b *testing.B) {
				ns := netns.New(b)
				base := benchState(n)
				with := base.clone()
				with["bench"] = entry{Kind: workload.KindPod, IP: netip.MustParseAddr("10.63.0.3"),
					Ports: []workload.PortMapping{{Port: 8080, TargetPort: 80, Protocol: "TCP"}}}
				if err := ns.Do(func() error { return fw.Sync(ctx, testRuleConfig, base) }); err != nil {
					b.Fatal(err)
				}
				for b.Loop() {
					err := ns.Do(func() error {
						if err := fw.Update(ctx, testRuleConfig, base, with); err != nil {
							return err
						}
						return fw.Update(ctx, testRuleConfig, with, base)
					})
					if err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
