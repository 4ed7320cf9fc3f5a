package runtimes

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// TestCNIBridgeNetwork: on a CNI node, bridge-mode Functions get a CNI
// state of their own, apart from the pods', and the built-in pod pool is
// never opened.
func TestCNIBridgeNetwork(t *testing.T) {
	state := t.TempDir()
	n := &network{cfg: Config{StateDir: state, Network: NetworkCNI, PodCIDR: "10.63.0.0/16",
		CNIConfDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)}}
	if !n.bridgeMode() {
		t.Fatal("a CNI node on a static range does not offer bridge mode")
	}
	if _, err := n.bridgeNetwork(nil); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"netns", "pods", "cache"} {
		if fi, err := os.Stat(filepath.Join(state, "functions", "cni", d)); err != nil || !fi.IsDir() {
			t.Errorf("functions/cni/%s: %v", d, err)
		}
	}
	for _, p := range []string{filepath.Join(state, "pods"), filepath.Join(state, "functions", "bridgenet")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s made on a CNI node (%v)", p, err)
		}
	}
}
