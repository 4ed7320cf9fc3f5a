package pod

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rik-org/rik/internal/testutil"
)

func TestMountRootfs(t *testing.T) {
	testutil.RequireRoot(t)
	base := t.TempDir()
	layer := filepath.Join(base, "layer")
	os.MkdirAll(filepath.Join(layer, "etc"), 0o755)
	os.WriteFile(filepath.Join(layer, "etc/motd"), []byte("lower"), 0o644)

	// Overlay: writes land in the bundle's upper dir, never in the layer.
	bundle := filepath.Join(base, "bundle")
	overlay, err := mountRootfs(bundle, []string{layer})
	if err != nil {
		t.Fatal(err)
	}
	if !overlay {
		testutil.Unavailable(t, "overlayfs cannot be mounted here")
	}
	t.Cleanup(func() { unmountRootfs(bundle) })
	if !isMounted(filepath.Join(bundle, "rootfs")) {
		t.Fatal("rootfs not mounted")
	}
	if err := os.WriteFile(filepath.Join(bundle, "rootfs/etc/motd"), []byte("upper"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(layer, "etc/motd")); string(b) != "lower" {
		t.Errorf("layer changed through the container: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(bundle, "upper/etc/motd")); string(b) != "upper" {
		t.Errorf("upper = %q", b)
	}
	if err := unmountRootfs(bundle); err != nil || isMounted(filepath.Join(bundle, "rootfs")) {
		t.Errorf("unmount: %v", err)
	}
	if err := unmountRootfs(bundle); err != nil {
		t.Errorf("second unmount: %v", err)
	}

	// Copy fallback (mount options too long for overlayfs).
	deep := filepath.Join(base, strings.Repeat("d", 200), strings.Repeat("e", 200), strings.Repeat("f", 200))
	var layers []string
	for i := 0; i < 8; i++ {
		l := filepath.Join(deep, strings.Repeat("l", 100)+string(rune('a'+i)))
		os.MkdirAll(l, 0o755)
		os.WriteFile(filepath.Join(l, "n"), []byte{byte('0' + i)}, 0o644)
		layers = append(layers, l)
	}
	copied := filepath.Join(base, "copied")
	overlay, err = mountRootfs(copied, layers)
	if err != nil || overlay {
		t.Fatalf("fallback: overlay=%v err=%v", overlay, err)
	}
	if b, _ := os.ReadFile(filepath.Join(copied, "rootfs/n")); string(b) != "7" {
		t.Errorf("copied rootfs n = %q, want the top layer's 7", b)
	}
}
