package bridgenet

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// GuardTable is the bridge-family nftables table that keeps DHCP inside a
// Function's namespace (as Virtlet does with ebtables). It lives in that
// namespace, so it goes with it. In nft's syntax:
//
//	table bridge rik-dhcp {
//	  chain input   { type filter hook input priority filter;   iifname "eth0" ether type ip udp dport 67 drop }
//	  chain output  { type filter hook output priority filter;  oifname "eth0" ether type ip udp sport 67 drop }
//	  chain forward { type filter hook forward priority filter; ether type ip udp dport { 67, 68 } drop }
//	}
//
// The server never hears a request from the pod network, never answers
// onto it, and no DHCP crosses between the guest and the pod network
// either way (the only forwarding there is, is eth0 <-> tap0).
const GuardTable = "rik-dhcp"

// Guard installs GuardTable in the namespace at nsPath, replacing any
// earlier one, in one batch.
func Guard(nsPath string) error {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("opening netns %s: %w", nsPath, err)
	}
	defer ns.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return fmt.Errorf("opening nftables in %s: %w", nsPath, err)
	}
	t := &nftables.Table{Name: GuardTable, Family: nftables.TableFamilyBridge}
	c.AddTable(t) // adding an existing table is a no-op; deleting then adding replaces it
	c.DelTable(t)
	c.AddTable(t)
	chain := func(name string, hook *nftables.ChainHook) *nftables.Chain {
		return c.AddChain(&nftables.Chain{Name: name, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: hook, Priority: nftables.ChainPriorityFilter})
	}
	in, out, fwd := chain("input", nftables.ChainHookInput), chain("output", nftables.ChainHookOutput), chain("forward", nftables.ChainHookForward)
	for _, r := range []struct {
		ch   *nftables.Chain
		ex   []expr.Any
		port uint32 // transport offset: 0 sport, 2 dport
		num  uint16
	}{
		{in, iface(expr.MetaKeyIIFNAME, VethDev), 2, 67},
		{out, iface(expr.MetaKeyOIFNAME, VethDev), 0, 67},
		{fwd, nil, 2, 67},
		{fwd, nil, 2, 68},
	} {
		exprs := append(append(r.ex, udp(r.port, r.num)...), &expr.Verdict{Kind: expr.VerdictDrop})
		c.AddRule(&nftables.Rule{Table: t, Chain: r.ch, Exprs: exprs})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("installing table bridge %s in %s: %w", GuardTable, nsPath, err)
	}
	return nil
}

// iface matches the input or output device named dev exactly.
func iface(key expr.MetaKey, dev string) []expr.Any {
	data := make([]byte, unix.IFNAMSIZ)
	copy(data, dev)
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data}}
}

// udp matches an IPv4 UDP packet whose port at offset (0 source, 2
// destination) is port.
func udp(offset uint32, port uint16) []expr.Any {
	etherIP := binary.BigEndian.AppendUint16(nil, unix.ETH_P_IP)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: etherIP},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 9, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: offset, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, port)},
	}
}
