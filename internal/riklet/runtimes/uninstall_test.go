package runtimes

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rik-org/rik/internal/nsenter"
	"github.com/rik-org/rik/internal/riklet/podnet"
	"github.com/rik-org/rik/internal/riklet/sdn"
	"github.com/rik-org/rik/internal/testutil"
	"github.com/rik-org/rik/internal/testutil/netns"
)

// Both the SDN and the bridge are removed, each with the node's settings,
// and a failure of one neither hides nor prevents the other.
func TestUninstallCallsBoth(t *testing.T) {
	var gotNet sdn.Config
	var gotBridge podnet.Config
	var calls []string
	network := func(ctx context.Context, c sdn.Config) error {
		calls, gotNet = append(calls, "sdn"), c
		return errors.New("chain busy")
	}
	bridge := func(ctx context.Context, c podnet.Config) error {
		calls, gotBridge = append(calls, "bridge"), c
		return podnet.ErrBridgeInUse
	}
	err := uninstall(context.Background(), Config{StateDir: "/x/riklet", Bridge: "br9"}, network, bridge)
	if err == nil || !strings.Contains(err.Error(), "chain busy") || !errors.Is(err, podnet.ErrBridgeInUse) {
		t.Errorf("uninstall = %v, want both errors", err)
	}
	if strings.Join(calls, ",") != "sdn,bridge" {
		t.Errorf("calls = %v", calls)
	}
	if gotNet.StateDir != "/x/riklet" || gotNet.PodBridge != "br9" || gotBridge.Bridge != "br9" {
		t.Errorf("sdn config %+v, bridge config %+v", gotNet, gotBridge)
	}
	ok := func(context.Context, sdn.Config) error { return nil }
	okBr := func(context.Context, podnet.Config) error { return nil }
	if err := uninstall(context.Background(), Config{}, ok, okBr); err != nil {
		t.Errorf("uninstall = %v", err)
	}
}

// For real, inside a throwaway namespace, with each firewall backend:
// what a node's SDN and pod bridge put there is gone afterwards.
func TestRootUninstall(t *testing.T) {
	for _, fw := range []string{sdn.FirewallIptables, sdn.FirewallNftables} {
		t.Run(fw, func(t *testing.T) {
			ns := netns.New(t)
			testutil.RequireTool(t, "iptables", "iptables-save", "nft")
			ctx := context.Background()
			dir := t.TempDir()
			var saved, tables, links string
			err := nsenter.Do(ns.Path, func() error {
				if out, err := exec.Command("ip", "link", "add", "rik0", "type", "bridge").CombinedOutput(); err != nil {
					return errors.New(string(out))
				}
				if _, err := sdn.New(ctx, sdn.Config{StateDir: dir, Firewall: fw}); err != nil {
					return err
				}
				ipt, _ := exec.Command("iptables-save").CombinedOutput()
				nft, _ := exec.Command("nft", "list", "tables").CombinedOutput()
				if !strings.Contains(string(ipt), ":RIKLET ") && !strings.Contains(string(nft), "table ip rik") {
					return errors.New("test broken: no rik rules after sdn.New:\n" + string(ipt) + string(nft))
				}
				if err := Uninstall(ctx, Config{StateDir: dir, Bridge: "rik0"}); err != nil {
					return err
				}
				out, err := exec.Command("iptables-save").CombinedOutput()
				saved = string(out)
				if err != nil {
					return err
				}
				out, err = exec.Command("nft", "list", "tables").CombinedOutput()
				tables = string(out)
				if err != nil {
					return err
				}
				out, err = exec.Command("ip", "-o", "link", "show").CombinedOutput()
				links = string(out)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(saved, "RIKLET") {
				t.Errorf("rik's chains left:\n%s", saved)
			}
			if strings.Contains(tables, "rik") {
				t.Errorf("rik's table left:\n%s", tables)
			}
			if strings.Contains(links, "rik0") {
				t.Errorf("bridge left:\n%s", links)
			}
			if _, err := os.Stat(filepath.Join(dir, "sdn")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("sdn state left: %v", err)
			}
		})
	}
}
