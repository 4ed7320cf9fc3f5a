package podnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
)

// ErrBridgeInUse: interfaces are still attached to the pod bridge.
var ErrBridgeInUse = errors.New("interfaces still attached")

// RemoveBridge deletes the node's pod bridge (cfg.Bridge, default rik0,
// in cfg.HostNetns) when no interface is attached to it; with some
// attached it is kept and the error wraps ErrBridgeInUse. A missing bridge
// is not an error; a device of that name that is not a bridge is not
// rik's and is left alone, with an error. Nothing else is read from cfg.
func RemoveBridge(ctx context.Context, cfg Config) error {
	name := cfg.Bridge
	if name == "" {
		name = DefaultBridge
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h, err := openHost(cfg.HostNetns)
	if err != nil {
		return fmt.Errorf("removing bridge %s: %w", name, err)
	}
	defer h.Close()
	br, err := h.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("removing bridge %s: %w", name, err)
	}
	if _, ok := br.(*netlink.Bridge); !ok {
		return fmt.Errorf("removing bridge %s: it is a %s, not rik's bridge: left alone", name, br.Type())
	}
	links, err := h.LinkList()
	if err != nil {
		return fmt.Errorf("removing bridge %s: listing links: %w", name, err)
	}
	if ports := attached(links, br.Attrs().Index); len(ports) > 0 {
		return fmt.Errorf("removing bridge %s: %w: %s", name, ErrBridgeInUse, strings.Join(ports, ", "))
	}
	if err := h.LinkDel(br); err != nil {
		return fmt.Errorf("removing bridge %s: %w", name, err)
	}
	log.Info("removed pod bridge", "bridge", name)
	return nil
}

// attached returns the sorted names of the links whose master is index.
func attached(links []netlink.Link, index int) []string {
	var out []string
	for _, l := range links {
		if a := l.Attrs(); a.MasterIndex == index && a.Index != index {
			out = append(out, a.Name)
		}
	}
	sort.Strings(out)
	return out
}
