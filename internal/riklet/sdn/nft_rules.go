package sdn

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/rik-org/rik/internal/workload"
)

// rik's nftables table, `table ip rik`, the only one the nftables backend
// writes. In nft's syntax (`nft list table ip rik`):
//
//	map ports { type inet_proto . inet_service : ipv4_addr . inet_service  # one element per mapping, commented with its instance id }
//	set protected { type inet_service  # DefaultProtectedPorts and Config.ProtectedPorts }
//	chain prerouting  { type nat hook prerouting priority dstnat - 1;  fib daddr type local dnat ip to meta l4proto . th dport map @ports }
//	chain output      { type nat hook output priority dstnat - 1;      fib daddr type local dnat ip to meta l4proto . th dport map @ports }
//	chain postrouting { type nat hook postrouting priority srcnat - 1; masquerade of the pools' egress, of hairpin traffic and of 127/8 leaving rik devices }
//	chain input       { type filter hook input priority filter - 1;    the guards: no node 127/8, no protected port for guests and pods }
//
// Priorities one before the standard ones put rik's DNAT and masquerade
// ahead of the node's own nat rules (iptables-nft's and iptables-legacy's
// sit at dstnat and srcnat): the first NAT of a connection wins, as rik's
// jumps at the top of the iptables chains do. A drop or reject is final
// whichever table it is in, so the guards hold against any other rules.
// An accept is not: it only ends rik's chain. Forwarding therefore needs
// no chain here, but a node whose iptables FORWARD chain drops gets rik's
// RIKLET-FORWARD accept chain there too (see nftFirewall).
const (
	nftTableName    = "rik"
	nftPortMap      = "ports"
	nftProtectedSet = "protected"
	nftProbeTable   = "rik-probe"
)

var (
	nftPortKey  = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
	nftPortData = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
)

// Registers: reg 1 is 16 bytes wide and starts with the 4-byte reg 8+1
// (NFT_REG32_00); reg 9 is NFT_REG32_01, the second 4 bytes. A
// concatenation "a . b" of 4-byte-padded fields sits in reg 1 then reg 9.
const (
	reg1 = 1
	reg9 = 9
)

// nftTable is what rik's table holds: base rules and guards from Cfg, the
// mappings in the port map.
type nftTable struct {
	Cfg      ruleConfig
	Mappings []dnat
}

// elemChunk bounds the elements of one netlink message: their list is one
// attribute, whose length field has 16 bits.
const elemChunk = 200

// queueTable queues the creation of table name holding t into c (nothing
// is sent before c.Flush).
func queueTable(c *nftables.Conn, name string, t nftTable) error {
	tbl := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: name})
	ports := &nftables.Set{Table: tbl, Name: nftPortMap, IsMap: true, Concatenation: true, KeyType: nftPortKey, DataType: nftPortData}
	if err := c.AddSet(ports, nil); err != nil {
		return fmt.Errorf("queueing map %s: %w", nftPortMap, err)
	}
	for chunk := range slices.Chunk(t.Mappings, elemChunk) {
		if err := c.SetAddElements(ports, portElements(chunk)); err != nil {
			return fmt.Errorf("queueing elements of %s: %w", nftPortMap, err)
		}
	}
	protected := &nftables.Set{Table: tbl, Name: nftProtectedSet, KeyType: nftables.TypeInetService, KeyByteOrder: binaryutil.BigEndian}
	var elems []nftables.SetElement
	for _, p := range t.Cfg.ProtectedPorts {
		elems = append(elems, nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(uint16(p))})
	}
	if err := c.AddSet(protected, elems); err != nil {
		return fmt.Errorf("queueing set %s: %w", nftProtectedSet, err)
	}
	for _, ch := range nftChains(t.Cfg, ports, protected) {
		chain := c.AddChain(&nftables.Chain{Name: ch.name, Table: tbl, Type: ch.typ, Hooknum: ch.hook, Priority: nftables.ChainPriorityRef(ch.prio)})
		for _, r := range ch.rules {
			c.AddRule(&nftables.Rule{Table: tbl, Chain: chain, Exprs: r})
		}
	}
	return nil
}

// nftChain is one base chain of rik's table.
type nftChain struct {
	name  string
	typ   nftables.ChainType
	hook  *nftables.ChainHook
	prio  nftables.ChainPriority
	rules [][]expr.Any
}

func nftChains(cfg ruleConfig, ports, protected *nftables.Set) []nftChain {
	dnatRule := []expr.Any{
		&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Payload{DestRegister: reg9, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: ports.Name, SetID: ports.ID},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1, RegProtoMin: reg9, Specified: true},
	}
	var post [][]expr.Any
	for _, p := range pools(cfg) {
		post = append(post, concat(matchPrefix(12, p, expr.CmpOpEq), matchPrefix(16, p, expr.CmpOpNeq), masq()))
	}
	for _, p := range pools(cfg) { // hairpin, as in render
		post = append(post, concat(ctBits(expr.CtKeySTATUS, ipsDstNAT), matchPrefix(12, p, expr.CmpOpEq), matchPrefix(16, p, expr.CmpOpEq), masq()))
	}
	loopback := netip.MustParsePrefix("127.0.0.0/8")
	for _, dev := range devices(cfg) {
		post = append(post, concat(matchPrefix(12, loopback, expr.CmpOpEq), matchIface(expr.MetaKeyOIFNAME, dev), masq()))
	}
	var input [][]expr.Any
	for _, dev := range devices(cfg) {
		input = append(input, concat(matchIface(expr.MetaKeyIIFNAME, dev), matchPrefix(16, loopback, expr.CmpOpEq),
			ctBits(expr.CtKeySTATE, expr.CtStateBitNEW|expr.CtStateBitINVALID), verdict(expr.VerdictDrop)))
	}
	for _, dev := range devices(cfg) {
		for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
			reject := &expr.Reject{Type: unix.NFT_REJECT_TCP_RST}
			if proto == unix.IPPROTO_UDP {
				reject = &expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 3} // port unreachable
			}
			input = append(input, concat(matchIface(expr.MetaKeyIIFNAME, dev),
				[]expr.Any{
					&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{proto}},
					&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
					&expr.Lookup{SourceRegister: reg1, SetName: protected.Name, SetID: protected.ID},
					reject,
				}))
		}
	}
	return []nftChain{
		{"prerouting", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, *nftables.ChainPriorityNATDest - 1, [][]expr.Any{dnatRule}},
		{"output", nftables.ChainTypeNAT, nftables.ChainHookOutput, *nftables.ChainPriorityNATDest - 1, [][]expr.Any{dnatRule}},
		{"postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, *nftables.ChainPriorityNATSource - 1, post},
		{"input", nftables.ChainTypeFilter, nftables.ChainHookInput, *nftables.ChainPriorityFilter - 1, input},
	}
}

// ipsDstNAT is IPS_DST_NAT of the conntrack status: the connection was
// DNATed.
const ipsDstNAT = 1 << 5

func concat(parts ...[]expr.Any) []expr.Any { return slices.Concat(parts...) }

func masq() []expr.Any { return []expr.Any{&expr.Masq{}} }

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

// matchPrefix matches the IPv4 source (offset 12) or destination (16)
// address against p.
func matchPrefix(offset uint32, p netip.Prefix, op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: net.CIDRMask(p.Bits(), 32), Xor: make([]byte, 4)},
		&expr.Cmp{Op: op, Register: reg1, Data: p.Masked().Addr().AsSlice()},
	}
}

// matchIface matches the input or output device against a pattern of
// devices(): "rik+" as a prefix, other names exactly.
func matchIface(key expr.MetaKey, dev string) []expr.Any {
	name, prefix := ifaceMatch(dev)
	data := []byte(name)
	if !prefix {
		data = make([]byte, unix.IFNAMSIZ)
		copy(data, name)
	}
	return []expr.Any{&expr.Meta{Key: key, Register: reg1}, &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: data}}
}

// ctBits matches a conntrack state or status having any of bits.
func ctBits(key expr.CtKey, bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: key},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
	}
}

// portElements returns the map elements of ds: key protocol . host port,
// value address . target port, the instance id as comment.
func portElements(ds []dnat) []nftables.SetElement {
	out := make([]nftables.SetElement, len(ds))
	for i, d := range ds {
		out[i] = nftables.SetElement{Key: portMapKey(d.Port), Val: portMapValue(d.IP, d.Port.TargetPort), Comment: d.ID}
	}
	return out
}

var protoNumbers = map[string]byte{"TCP": unix.IPPROTO_TCP, "UDP": unix.IPPROTO_UDP}

// portMapKey is inet_proto . inet_service, each padded to 4 bytes.
func portMapKey(p workload.PortMapping) []byte {
	k := make([]byte, 8)
	k[0] = protoNumbers[p.Protocol]
	binary.BigEndian.PutUint16(k[4:], uint16(p.Port))
	return k
}

// portMapValue is ipv4_addr . inet_service, the port padded to 4 bytes.
func portMapValue(ip netip.Addr, port int) []byte {
	v := make([]byte, 8)
	a := ip.As4()
	copy(v, a[:])
	binary.BigEndian.PutUint16(v[4:], uint16(port))
	return v
}

// parsePortElement reads back an element of the port map.
func parsePortElement(e nftables.SetElement) (dnat, error) {
	if len(e.Key) != 8 || len(e.Val) != 8 {
		return dnat{}, fmt.Errorf("map element with a %d-byte key and a %d-byte value: want 8 and 8", len(e.Key), len(e.Val))
	}
	d := dnat{ID: e.Comment, IP: netip.AddrFrom4([4]byte(e.Val[:4]))}
	for name, n := range protoNumbers {
		if e.Key[0] == n {
			d.Port.Protocol = name
		}
	}
	if d.Port.Protocol == "" {
		return dnat{}, fmt.Errorf("map element for protocol %d: want tcp or udp", e.Key[0])
	}
	d.Port.Port = int(binary.BigEndian.Uint16(e.Key[4:]))
	d.Port.TargetPort = int(binary.BigEndian.Uint16(e.Val[4:]))
	return d, nil
}
