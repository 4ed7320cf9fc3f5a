package sdn

import (
	"context"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/rik-org/rik/internal/workload"
)

var saveNoise = regexp.MustCompile(`(?m)^#.*\n|\[\d+:\d+\]`)

// normalSave is iptables-save of the node without comments and counters.
func (n *testNode) normalSave(t *testing.T) string {
	t.Helper()
	return saveNoise.ReplaceAllString(n.save(t), "")
}

// hasRikTable reports whether rik's nftables table is on the node.
func (n *testNode) hasRikTable(t *testing.T) bool {
	t.Helper()
	err := n.node.Do(func() error { _, err := (netlinkNft{}).Mappings(context.Background()); return err })
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

func TestRootUninstall(t *testing.T) {
	forEachRealBackend(t, func(t *testing.T, rb realBackend) {
		ctx := context.Background()
		n := newTestNode(t, rb)
		ipt := rb.ipt
		for _, args := range [][]string{
			{"-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "1", "-j", "RETURN"},
			{"-t", "nat", "-N", "FOREIGN"},
			{"-t", "nat", "-A", "FOREIGN", "-j", "RETURN"},
			{"-t", "nat", "-A", "POSTROUTING", "-o", "eth9", "-j", "MASQUERADE"},
			{"-t", "filter", "-A", "FORWARD", "-i", "eth9", "-j", "DROP"},
			{"-t", "filter", "-A", "INPUT", "-i", "eth9", "-j", "DROP"},
		} {
			n.node.Run(t, ipt.IptablesBin, args...)
		}
		before := n.normalSave(t)

		dir := t.TempDir()
		m := n.manager(t, dir, netlinkHost{})
		fn, err := m.SetupFunction(ctx, "fn-u", []workload.PortMapping{{Port: 8080, TargetPort: 80}})
		if err != nil {
			t.Fatal(err)
		}
		// A second copy of a jump, as a crashed older riklet could leave.
		n.node.Run(t, ipt.IptablesBin, append([]string{"-t", "filter", "-A", "FORWARD"}, jumps[3].Rule...)...)
		if got := n.mappings(t); len(got) != 1 || !strings.HasSuffix(got[0], " fn-u") || n.hasRikTable(t) != rb.nft {
			t.Fatalf("test broken: rik's rules not programmed: %q\n%s", got, n.dump(t))
		}

		cfg := Config{StateDir: dir, Netns: n.node.Path}
		for i := range 2 {
			if err := uninstall(ctx, cfg, ipt, netlinkNft{}, netlinkHost{}); err != nil {
				t.Fatalf("uninstall #%d: %v", i+1, err)
			}
			if after := n.normalSave(t); after != before {
				t.Errorf("after uninstall #%d:\n%s\nwant as before rik:\n%s", i+1, after, before)
			}
			if n.hasRikTable(t) {
				t.Errorf("after uninstall #%d, rik's nftables table is still there", i+1)
			}
			links := n.node.Run(t, "ip", "-o", "link", "show")
			if strings.Contains(links, fn.Tap) || !strings.Contains(links, ": eth0@") {
				t.Errorf("after uninstall #%d, links:\n%s", i+1, links)
			}
		}
	})
}

// A rule not rik's jumping to RIKLET keeps it, and is kept.
func TestRootUninstallKeepsForeignJump(t *testing.T) {
	forEachFlavour(t, func(t *testing.T, ipt *execIptables) {
		ctx := context.Background()
		rb := realBackend{ipt: ipt}
		n := newTestNode(t, rb)
		dir := t.TempDir()
		n.manager(t, dir, netlinkHost{})
		n.node.Run(t, ipt.IptablesBin, "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "2", "-j", "RIKLET")
		if err := uninstall(ctx, Config{StateDir: dir, Netns: n.node.Path}, ipt, netlinkNft{}, netlinkHost{}); err == nil {
			t.Error("uninstall with a foreign jump to RIKLET: no error")
		}
		saved := n.normalSave(t)
		for _, want := range []string{":RIKLET - ", "-A OUTPUT -p tcp -m tcp --dport 2 -j RIKLET"} {
			if !strings.Contains(saved, want) {
				t.Errorf("missing %q:\n%s", want, saved)
			}
		}
		for _, gone := range []string{"RIKLET-POSTROUTING", "RIKLET-FORWARD", "RIKLET-INPUT", "--comment rik "} {
			if strings.Contains(saved, gone) {
				t.Errorf("%q left:\n%s", gone, saved)
			}
		}
	})
}
