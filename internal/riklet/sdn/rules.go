package sdn

import (
	"bytes"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/rik-org/rik/internal/workload"
)

// rik's own chains. Nothing else is ever written by the SDN, apart from the
// jumps below.
const (
	chainDNAT    = "RIKLET"             // nat: one DNAT per exposed port
	chainPost    = "RIKLET-POSTROUTING" // nat: masquerade
	chainForward = "RIKLET-FORWARD"     // filter: accept rik's traffic
	chainInput   = "RIKLET-INPUT"       // filter: guests may not reach the node's 127.0.0.0/8
)

// ruleConfig is what rik's chains depend on besides the instances.
type ruleConfig struct {
	FunctionPool netip.Prefix
	PodCIDR      netip.Prefix
	PodBridge    string
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

// dnat is one exposed port.
type dnat struct {
	ID   string
	IP   netip.Addr
	Port workload.PortMapping
}

// render returns the iptables-restore input (for --noflush) holding the
// whole content of rik's chains for state s. Declaring a chain in
// --noflush mode flushes that chain only, so applying the text replaces
// rik's rules and leaves every other chain alone. Same input, same text.
func render(cfg ruleConfig, s state) []byte {
	var rules []dnat
	for id, e := range s {
		for _, p := range e.Ports {
			rules = append(rules, dnat{ID: id, IP: e.IP, Port: p})
		}
	}
	sort.Slice(rules, func(i, j int) bool {
		a, b := rules[i], rules[j]
		if a.Port.Protocol != b.Port.Protocol {
			return a.Port.Protocol < b.Port.Protocol
		}
		if a.Port.Port != b.Port.Port {
			return a.Port.Port < b.Port.Port
		}
		return a.ID < b.ID
	})

	var b bytes.Buffer
	b.WriteString("*nat\n")
	fmt.Fprintf(&b, ":%s - [0:0]\n:%s - [0:0]\n", chainDNAT, chainPost)
	for _, r := range rules {
		proto := strings.ToLower(r.Port.Protocol)
		fmt.Fprintf(&b, "-A %s -p %s -m %s --dport %d -m comment --comment \"rik:%s\" -j DNAT --to-destination %s\n",
			chainDNAT, proto, proto, r.Port.Port, r.ID, netip.AddrPortFrom(r.IP, uint16(r.Port.TargetPort)))
	}
	for _, p := range []netip.Prefix{cfg.FunctionPool, cfg.PodCIDR} {
		if p.IsValid() {
			fmt.Fprintf(&b, "-A %s -s %s ! -d %s -j MASQUERADE\n", chainPost, p.Masked(), p.Masked())
		}
	}
	for _, dev := range devices(cfg) {
		fmt.Fprintf(&b, "-A %s -s 127.0.0.0/8 -o %s -j MASQUERADE\n", chainPost, dev)
	}
	b.WriteString("COMMIT\n")

	b.WriteString("*filter\n")
	fmt.Fprintf(&b, ":%s - [0:0]\n:%s - [0:0]\n", chainForward, chainInput)
	fmt.Fprintf(&b, "-A %s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n", chainForward)
	for _, dev := range devices(cfg) {
		fmt.Fprintf(&b, "-A %s -i %s -j ACCEPT\n-A %s -o %s -j ACCEPT\n", chainForward, dev, chainForward, dev)
	}
	for _, dev := range devices(cfg) {
		fmt.Fprintf(&b, "-A %s -i %s -d 127.0.0.0/8 -m conntrack --ctstate NEW,INVALID -j DROP\n", chainInput, dev)
	}
	b.WriteString("COMMIT\n")
	return b.Bytes()
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
