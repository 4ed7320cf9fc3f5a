package workload

import (
	"net/netip"
	"net/url"
	"path"
	"strconv"
	"strings"
)

// DefaultRootfsDir is where file:// root filesystems may be, unless a
// controller or a node says otherwise (--rootfs-dir).
const DefaultRootfsDir = "/var/lib/rik/rootfs"

// RootfsFilePath returns the path a file:// rootfs URL names, cleaned
// (so "..", also percent-encoded, is resolved lexically). It refuses a
// URL naming another host ("file://host/p"; "localhost" is this one) and
// one that is not file:// or not absolute.
func RootfsFilePath(rawURL string) (string, bool) {
	u, err := url.Parse(rawURL)
	if err != nil || !strings.EqualFold(u.Scheme, "file") || u.Opaque != "" {
		return "", false
	}
	if u.Host != "" && !strings.EqualFold(u.Host, "localhost") {
		return "", false
	}
	if !strings.HasPrefix(u.Path, "/") {
		return "", false
	}
	return path.Clean(u.Path), true
}

// FileUnder tells whether the absolute path p is a file strictly under
// one of dirs, judged lexically, and returns that directory (cleaned) and
// p relative to it. The caller opens rel inside dir without following
// links out of it.
func FileUnder(p string, dirs []string) (dir, rel string, ok bool) {
	if !strings.HasPrefix(p, "/") {
		return "", "", false
	}
	p = path.Clean(p)
	for _, d := range dirs {
		if !strings.HasPrefix(d, "/") {
			continue
		}
		d = path.Clean(d)
		prefix := d + "/"
		if d == "/" {
			prefix = "/"
		}
		if r, found := strings.CutPrefix(p, prefix); found && r != "" {
			return d, r, true
		}
	}
	return "", "", false
}

// Cloud metadata services: reaching them from a node hands out its
// credentials. Besides these, every link-local address is refused.
var (
	metadataAddrs = []netip.Addr{
		netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud
		netip.MustParseAddr("fd00:ec2::254"),   // AWS over IPv6
	}
	metadataNames = map[string]bool{
		"metadata": true, "metadata.google.internal": true, "metadata.goog": true,
		"instance-data": true, "instance-data.ec2.internal": true,
	}
	nat64    = netip.MustParsePrefix("64:ff9b::/96")
	thisNet4 = netip.MustParsePrefix("0.0.0.0/8")
)

// RefusedFetchAddr says why no node ever fetches a rootfs from a: a
// link-local (cloud metadata lives there) or metadata address, multicast,
// or unspecified ("this host"). "" means a may be fetched from as far as
// this rule goes; a node also refuses its own and loopback addresses
// unless it allows private fetches.
func RefusedFetchAddr(a netip.Addr) string {
	a = a.Unmap()
	if nat64.Contains(a) { // NAT64 gateway to an IPv4 address
		b := a.As16()
		a = netip.AddrFrom4([4]byte(b[12:]))
	}
	for _, m := range metadataAddrs {
		if a == m {
			return "a cloud metadata address"
		}
	}
	switch {
	case a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast():
		return "a link-local address"
	case a.IsMulticast():
		return "a multicast address"
	case a.IsUnspecified() || thisNet4.Contains(a):
		return "an unspecified address"
	}
	return ""
}

// RefusedFetchHost says why the host of an http(s) URL is refused on
// sight: a metadata name or a literal address RefusedFetchAddr refuses
// (in any spelling resolvers accept: 169.254.169.254, 0xa9fea9fe,
// 2852039166, [::ffff:a9fe:a9fe]...). Names are resolved, and checked
// again, by the node.
func RefusedFetchHost(host string) string {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if metadataNames[host] {
		return "a cloud metadata name"
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		var ok bool
		if a, ok = parseLooseIPv4(host); !ok {
			return ""
		}
	}
	return RefusedFetchAddr(a)
}

// parseLooseIPv4 parses the IPv4 spellings of inet_aton(3), which C
// resolvers accept: 1 to 4 parts, each decimal, octal (leading 0) or hex
// (0x), the last filling the remaining bytes.
func parseLooseIPv4(s string) (netip.Addr, bool) {
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	var vals []uint64
	for _, p := range parts {
		base := 10
		switch {
		case len(p) > 2 && (p[:2] == "0x" || p[:2] == "0X"):
			p, base = p[2:], 16
		case len(p) > 1 && p[0] == '0':
			p, base = p[1:], 8
		}
		v, err := strconv.ParseUint(p, base, 32)
		if err != nil || p == "" || strings.ContainsAny(p, "+-_") {
			return netip.Addr{}, false
		}
		vals = append(vals, v)
	}
	var n uint64
	for i, v := range vals {
		if i < len(vals)-1 {
			if v > 0xff {
				return netip.Addr{}, false
			}
			n |= v << (8 * (3 - i))
			continue
		}
		if v >= 1<<(8*(4-i)) {
			return netip.Addr{}, false
		}
		n |= v
	}
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), true
}
