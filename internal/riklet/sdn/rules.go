package sdn

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// rik's own chains. Nothing else is ever written by the SDN, apart from the
// jumps below.
const (
	chainDNAT    = "RIKLET"             // nat: one DNAT per exposed port
	chainPost    = "RIKLET-POSTROUTING" // nat: masquerade
	chainForward = "RIKLET-FORWARD"     // filter: accept rik's traffic
	chainInput   = "RIKLET-INPUT"       // filter: guests may not reach the node's 127.0.0.0/8 nor its protected ports
)

// DefaultProtectedPorts are the ports of rik's control plane (scheduler
// 4995 and 4996, controller 5000) and etcd's (2379, 2380), which pods and
// guests may never reach on any address of their node.
var DefaultProtectedPorts = []int{2379, 2380, 4995, 4996, 5000}

// multiportMax is how many ports one iptables multiport match takes.
const multiportMax = 15

// ruleConfig is what rik's chains depend on besides the instances.
type ruleConfig struct {
	FunctionPool   netip.Prefix
	PodCIDR        netip.Prefix
	PodBridge      string
	ProtectedPorts []int // sorted, unique
}

// jump is a rule rik keeps in a built-in chain, sending traffic to its own.
type jump struct {
	Table, Chain string
	Rule         []string
}

// jumps are checked (-C) and inserted at the top (-I 1) when missing.
var jumps = []jump{
	{"nat", "PREROUTING", []string{"-m", "addrtype", "--dst-type", "LOCAL", "-m", "comment", "--comment", "rik", "-j", chainDNAT}},
	{"nat", "OUTPUT", []string{"-m", "addrtype", "--dst-type", "LOCAL", "-m", "comment", "--comment", "rik", "-j", chainDNAT}},
	{"nat", "POSTROUTING", []string{"-m", "comment", "--comment", "rik", "-j", chainPost}},
	{"filter", "FORWARD", []string{"-m", "comment", "--comment", "rik", "-j", chainForward}},
	{"filter", "INPUT", []string{"-m", "comment", "--comment", "rik", "-j", chainInput}},
}

// ipChain is one of rik's iptables chains.
type ipChain struct{ table, name string }

// ipChains are rik's iptables chains, in the order they are removed.
var ipChains = []ipChain{{"nat", chainDNAT}, {"nat", chainPost}, {"filter", chainForward}, {"filter", chainInput}}

// render returns the iptables-restore input (for --noflush) holding the
// whole content of rik's chains for state s. Declaring a chain in
// --noflush mode flushes that chain only, so applying the text replaces
// rik's rules and leaves every other chain alone. Same input, same text.
func render(cfg ruleConfig, s state) []byte {
	var b bytes.Buffer
	b.WriteString("*nat\n")
	fmt.Fprintf(&b, ":%s - [0:0]\n:%s - [0:0]\n", chainDNAT, chainPost)
	for _, r := range dnats(s) {
		proto := strings.ToLower(r.Port.Protocol)
		fmt.Fprintf(&b, "-A %s -p %s -m %s --dport %d -m comment --comment \"rik:%s\" -j DNAT --to-destination %s\n",
			chainDNAT, proto, proto, r.Port.Port, r.ID, netip.AddrPortFrom(r.IP, uint16(r.Port.TargetPort)))
	}
	for _, p := range pools(cfg) {
		fmt.Fprintf(&b, "-A %s -s %s ! -d %s -j MASQUERADE\n", chainPost, p, p)
	}
	// Hairpin: a guest or pod reaching a mapping of its own pool through a
	// node address. Without it the reply would go straight back, not
	// through the node, and miss the reverse translation.
	for _, p := range pools(cfg) {
		fmt.Fprintf(&b, "-A %s -s %s -d %s -m conntrack --ctstate DNAT -j MASQUERADE\n", chainPost, p, p)
	}
	for _, dev := range devices(cfg) {
		fmt.Fprintf(&b, "-A %s -s 127.0.0.0/8 -o %s -j MASQUERADE\n", chainPost, dev)
	}
	b.WriteString("COMMIT\n")

	b.WriteString("*filter\n")
	fmt.Fprintf(&b, ":%s - [0:0]\n:%s - [0:0]\n", chainForward, chainInput)
	writeForward(&b, cfg)
	for _, dev := range devices(cfg) {
		fmt.Fprintf(&b, "-A %s -i %s -d 127.0.0.0/8 -m conntrack --ctstate NEW,INVALID -j DROP\n", chainInput, dev)
	}
	// Every address of the node: INPUT sees only local destinations. A
	// refusal, not a silent drop: a pod that tries fails at once.
	for _, dev := range devices(cfg) {
		for _, proto := range []string{"tcp", "udp"} {
			reject := map[string]string{"tcp": "tcp-reset", "udp": "icmp-port-unreachable"}[proto]
			for ports := range slices.Chunk(cfg.ProtectedPorts, multiportMax) {
				fmt.Fprintf(&b, "-A %s -i %s -p %s -m multiport --dports %s -j REJECT --reject-with %s\n",
					chainInput, dev, proto, joinInts(ports), reject)
			}
		}
	}
	b.WriteString("COMMIT\n")
	return b.Bytes()
}

// renderForward returns the iptables-restore input for RIKLET-FORWARD
// alone: what the nftables backend keeps in iptables when the node's
// iptables FORWARD chain would drop rik's traffic (an accept in rik's
// table cannot overrule a drop in another).
func renderForward(cfg ruleConfig) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "*filter\n:%s - [0:0]\n", chainForward)
	writeForward(&b, cfg)
	b.WriteString("COMMIT\n")
	return b.Bytes()
}

func writeForward(b *bytes.Buffer, cfg ruleConfig) {
	fmt.Fprintf(b, "-A %s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n", chainForward)
	for _, dev := range devices(cfg) {
		fmt.Fprintf(b, "-A %s -i %s -j ACCEPT\n-A %s -o %s -j ACCEPT\n", chainForward, dev, chainForward, dev)
	}
}

// pools are the address ranges of rik's guests and pods.
func pools(cfg ruleConfig) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range []netip.Prefix{cfg.FunctionPool, cfg.PodCIDR} {
		if p.IsValid() {
			out = append(out, p.Masked())
		}
	}
	return out
}

// protectedPorts returns DefaultProtectedPorts and extra, sorted, each
// once; it refuses a port outside 1-65535.
func protectedPorts(extra []int) ([]int, error) {
	ports := append(slices.Clone(DefaultProtectedPorts), extra...)
	for _, p := range ports {
		if p < 1 || p > 65535 {
			return nil, fmt.Errorf("protected port %d: want 1-65535: %w", p, ErrInvalid)
		}
	}
	slices.Sort(ports)
	return slices.Compact(ports), nil
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// devices are the interface patterns of rik's guests: every TAP, and the
// pod bridge unless the TAP pattern already covers it.
func devices(cfg ruleConfig) []string {
	devs := []string{tapPrefix + "+"}
	if cfg.PodBridge != "" && !strings.HasPrefix(cfg.PodBridge, tapPrefix) {
		devs = append(devs, cfg.PodBridge)
	}
	return devs
}
