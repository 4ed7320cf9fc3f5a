package podnet

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/rik-org/rik/internal/testutil/netns"
)

func TestAttached(t *testing.T) {
	link := func(name string, index, master int) netlink.Link {
		return &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name, Index: index, MasterIndex: master}}
	}
	links := []netlink.Link{
		link("lo", 1, 0), link("rik0", 2, 0), link("rikpb", 4, 2), link("rikpa", 3, 2),
		link("other0", 5, 0), link("vethx", 6, 5),
	}
	for _, tc := range []struct {
		index int
		want  []string
	}{
		{2, []string{"rikpa", "rikpb"}},
		{5, []string{"vethx"}},
		{1, nil},
	} {
		if got := attached(links, tc.index); !slices.Equal(got, tc.want) {
			t.Errorf("attached(%d) = %v, want %v", tc.index, got, tc.want)
		}
	}
}

// The bridge goes only once its last pod is gone; a device of its name that
// is not a bridge is never deleted.
func TestRemoveBridge(t *testing.T) {
	host := netns.New(t)
	ctx := context.Background()
	cfg := Config{StateDir: t.TempDir(), HostNetns: host.Path, CIDR: netip.MustParsePrefix("10.99.2.0/24"), Bridge: "riktest2"}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := RemoveBridge(ctx, cfg); err != nil {
		t.Fatalf("RemoveBridge before any pod: %v", err)
	}
	a, err := m.Setup(ctx, "pod-a")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Teardown(ctx, "pod-a") })
	err = RemoveBridge(ctx, cfg)
	if !errors.Is(err, ErrBridgeInUse) {
		t.Errorf("RemoveBridge with pod-a attached = %v, want ErrBridgeInUse", err)
	}
	if links := host.Links(t); !slices.Contains(links, "riktest2") || !slices.Contains(links, a.HostVeth) {
		t.Fatalf("bridge or veth gone while in use: %v", links)
	}
	if err := m.Teardown(ctx, "pod-a"); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := RemoveBridge(ctx, cfg); err != nil {
			t.Fatalf("RemoveBridge #%d: %v", i+1, err)
		}
		if slices.Contains(host.Links(t), "riktest2") {
			t.Errorf("bridge left after RemoveBridge #%d", i+1)
		}
	}

	host.Run(t, "ip", "link", "add", "riktest3", "type", "veth", "peer", "name", "riktest4")
	if err := RemoveBridge(ctx, Config{HostNetns: host.Path, Bridge: "riktest3"}); err == nil {
		t.Error("RemoveBridge of a veth: no error")
	}
	if !slices.Contains(host.Links(t), "riktest3") {
		t.Error("a device that is not a bridge was deleted")
	}
}
