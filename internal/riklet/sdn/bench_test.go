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
		if _, err := exec.LookPath("iptables-" + flavour); err != nil {
			continue
		}
		ipt, err := newExecIptables(flavour)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(flavour, func(b *testing.B) { benchmarkProgram(b, ipt) })
	}
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

// BenchmarkExposeOne is one change through the Manager (expose a new pod
// port, then unexpose it: two persisted, applied batches) with n mappings
// already present. Root only.
func BenchmarkExposeOne(b *testing.B) {
	testutil.RequireRoot(b)
	ipt, err := detectIptables(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprintf("present=%d", n), func(b *testing.B) {
			ns := netns.New(b)
			m, err := newManager(ctx, Config{StateDir: b.TempDir(), Netns: ns.Path}, ipt, netlinkHost{})
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
	}
}
