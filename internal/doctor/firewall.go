package doctor

import (
	"github.com/rik-org/rik/internal/riklet/sdn"
)

var (
	// nftModules: what rik's nftables table uses (NAT chains, conntrack,
	// fib, masquerade, reject), programmed over netlink: no tool needed.
	nftModules = []module{
		{name: "nf_tables", config: "CONFIG_NF_TABLES"},
		{name: "nf_nat", config: "CONFIG_NF_NAT"},
		{name: "nft_chain_nat", config: "CONFIG_NFT_NAT"},
		{name: "nft_nat", config: "CONFIG_NFT_NAT"},
		{name: "nft_ct", config: "CONFIG_NFT_CT"},
		{name: "nft_masq", config: "CONFIG_NFT_MASQ"},
		{name: "nft_fib_ipv4", config: "CONFIG_NFT_FIB_IPV4"},
		{name: "nft_reject_ipv4", config: "CONFIG_NFT_REJECT_IPV4"},
	}
	// iptModules: the tables (legacy, or nf_tables under iptables-nft),
	// NAT, and the matches and targets of rik's iptables rules.
	iptModules = []module{
		{name: "nf_tables", config: "CONFIG_NF_TABLES", alt: &module{name: "ip_tables", config: "CONFIG_IP_NF_IPTABLES"}},
		{name: "nf_nat", config: "CONFIG_NF_NAT"},
		{name: "xt_addrtype", config: "CONFIG_NETFILTER_XT_MATCH_ADDRTYPE"},
		{name: "xt_comment", config: "CONFIG_NETFILTER_XT_MATCH_COMMENT"},
		{name: "xt_conntrack", config: "CONFIG_NETFILTER_XT_MATCH_CONNTRACK"},
		{name: "xt_multiport", config: "CONFIG_NETFILTER_XT_MATCH_MULTIPORT"},
		{name: "xt_MASQUERADE", config: "CONFIG_NETFILTER_XT_TARGET_MASQUERADE"},
	}
)

// checkFirewall tells whether the backend the riklet's --firewall
// chooses can work here: nftables needs only kernel features; iptables
// needs its tools too. With auto (or ""), either one is enough, as the
// riklet falls back from nftables to iptables.
func checkFirewall(h Host, k kernelInfo, choice string, missing Status) Result {
	nft := k.check("firewall", missing, nftModules)
	ipt := iptablesBackend(h, k, missing)
	switch choice {
	case sdn.FirewallNftables:
		return labelled(nft, "nftables")
	case sdn.FirewallIptables:
		return labelled(ipt, "iptables")
	}
	switch {
	case nft.Status == OK:
		return labelled(nft, "nftables, over netlink")
	case ipt.Status == OK:
		ipt.Detail = "iptables (" + ipt.Detail + "); nftables: " + nft.Detail
		return ipt
	}
	r := Result{Check: "firewall", Status: missing,
		Detail: "neither backend works: nftables: " + nft.Detail + "; iptables: " + ipt.Detail,
		Fix:    ipt.Fix, Packages: ipt.Packages}
	if nft.Status == Warn || ipt.Status == Warn {
		r.Status = Warn // the host does not say enough to tell
	}
	return r
}

// iptablesBackend checks the iptables backend: its tools, then the
// kernel features of rik's rules.
func iptablesBackend(h Host, k kernelInfo, missing Status) Result {
	tools := checkTools(h, "firewall", missing, "rik's chains are programmed with them",
		tool{"iptables", "iptables"}, tool{"iptables-restore", "iptables"})
	if tools.Status != OK {
		return tools
	}
	kernel := k.check("firewall", missing, iptModules)
	if kernel.Status != OK {
		return kernel
	}
	kernel.Detail = tools.Detail + "; " + kernel.Detail
	return kernel
}

// labelled prefixes the detail of a backend's check with its name.
func labelled(r Result, name string) Result {
	r.Detail = name + ": " + r.Detail
	return r
}
