package sdn

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"syscall"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/rik-org/rik/internal/workload"
)

// nftClient is what the nftables backend needs from the kernel: rik's own
// table, replaced whole or changed a few map elements at a time. The real
// one speaks netlink (github.com/google/nftables) in the calling thread's
// network namespace; tests use a stateful fake.
type nftClient interface {
	// Replace replaces rik's table (creating it) with t, in one
	// transaction.
	Replace(ctx context.Context, t nftTable) error
	// Update deletes del from and adds add to the port map, in one
	// transaction: all or nothing.
	Update(ctx context.Context, del, add []dnat) error
	// Mappings lists the port map, the owner of each element read from
	// its comment. Without rik's table it returns an error wrapping
	// os.ErrNotExist.
	Mappings(ctx context.Context) ([]dnat, error)
	// Delete deletes rik's table and reports whether it was there.
	Delete(ctx context.Context) (bool, error)
}

// netlinkNft is the real nftClient. Each call opens its own netlink socket
// in the calling thread's network namespace.
type netlinkNft struct{}

var rikTable = &nftables.Table{Family: nftables.TableFamilyIPv4, Name: nftTableName}

// conn returns a connection whose socket takes batches of n map elements
// and gives up at ctx's deadline.
func (netlinkNft) conn(ctx context.Context, n int) (*nftables.Conn, error) {
	var opts []nftables.SockOption
	if dl, ok := ctx.Deadline(); ok {
		opts = append(opts, func(c *netlink.Conn) error { return c.SetDeadline(dl) })
	}
	// A batch is one sendmsg, refused beyond the socket's send buffer
	// (212 KiB by default). An element takes up to ~200 bytes (a
	// 128-character id in its comment).
	if size := n*256 + 64<<10; size > 192<<10 {
		opts = append(opts, func(c *netlink.Conn) error { return forceSendBuffer(c, size) })
	}
	c, err := nftables.New(nftables.WithSockOptions(opts...))
	if err != nil {
		return nil, fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	return c, nil
}

func forceSendBuffer(c *netlink.Conn, size int) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("growing the netlink send buffer to %d bytes: %w", size, serr)
	}
	return nil
}

func (n netlinkNft) Replace(ctx context.Context, t nftTable) error {
	c, err := n.conn(ctx, len(t.Mappings))
	if err != nil {
		return err
	}
	c.AddTable(rikTable) // so that there is one to delete
	c.DelTable(rikTable)
	if err := queueTable(c, nftTableName, t); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("replacing table ip %s: %w", nftTableName, err)
	}
	return nil
}

func (n netlinkNft) Update(ctx context.Context, del, add []dnat) error {
	c, err := n.conn(ctx, len(del)+len(add))
	if err != nil {
		return err
	}
	set := &nftables.Set{Table: rikTable, Name: nftPortMap}
	for chunk := range slices.Chunk(del, elemChunk) {
		keys := make([]nftables.SetElement, len(chunk))
		for i, d := range chunk {
			keys[i] = nftables.SetElement{Key: portMapKey(d.Port)}
		}
		if err := c.SetDeleteElements(set, keys); err != nil {
			return fmt.Errorf("queueing deletions from map %s: %w", nftPortMap, err)
		}
	}
	for chunk := range slices.Chunk(add, elemChunk) {
		if err := c.SetAddElements(set, portElements(chunk)); err != nil {
			return fmt.Errorf("queueing additions to map %s: %w", nftPortMap, err)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("updating map ip %s %s (-%d +%d): %w", nftTableName, nftPortMap, len(del), len(add), err)
	}
	return nil
}

func (n netlinkNft) Mappings(ctx context.Context) ([]dnat, error) {
	c, err := n.conn(ctx, 0)
	if err != nil {
		return nil, err
	}
	if _, err := c.ListTableOfFamily(nftTableName, nftables.TableFamilyIPv4); err != nil {
		return nil, fmt.Errorf("finding table ip %s: %w", nftTableName, err)
	}
	elems, err := c.GetSetElements(&nftables.Set{Table: rikTable, Name: nftPortMap})
	if err != nil {
		return nil, fmt.Errorf("listing map ip %s %s: %w", nftTableName, nftPortMap, err)
	}
	out := make([]dnat, 0, len(elems))
	for _, e := range elems {
		d, err := parsePortElement(e)
		if err != nil {
			return nil, fmt.Errorf("listing map ip %s %s: %w", nftTableName, nftPortMap, err)
		}
		out = append(out, d)
	}
	return out, nil
}

func (n netlinkNft) Delete(ctx context.Context) (bool, error) {
	c, err := n.conn(ctx, 0)
	if err != nil {
		return false, err
	}
	if _, err := c.ListTableOfFamily(nftTableName, nftables.TableFamilyIPv4); errors.Is(err, os.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("finding table ip %s: %w", nftTableName, err)
	}
	c.DelTable(rikTable)
	if err := c.Flush(); err != nil && !errors.Is(err, syscall.ENOENT) {
		return false, fmt.Errorf("deleting table ip %s: %w", nftTableName, err)
	}
	return true, nil
}

// probeNftables checks, in the calling thread's network namespace, that
// the kernel takes everything rik's table needs (nat chains, a map with
// concatenated keys and values, fib, ct, reject) by creating a throwaway
// table holding it and deleting it in the same transaction: nothing is
// ever visible, even if the riklet dies meanwhile.
func probeNftables(ctx context.Context) error {
	c, err := netlinkNft{}.conn(ctx, 1)
	if err != nil {
		return err
	}
	probe := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: nftProbeTable}
	c.AddTable(probe)
	c.DelTable(probe)
	t := nftTable{
		Cfg: ruleConfig{FunctionPool: DefaultFunctionPool, PodCIDR: DefaultPodCIDR, PodBridge: "rikprobe0", ProtectedPorts: DefaultProtectedPorts},
		Mappings: []dnat{{ID: "probe", IP: netip.MustParseAddr("10.62.0.1"),
			Port: workload.PortMapping{Protocol: "TCP", Port: 8080, TargetPort: 80}}},
	}
	if err := queueTable(c, nftProbeTable, t); err != nil {
		return err
	}
	c.DelTable(probe)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("probing nftables: %w", err)
	}
	return nil
}
