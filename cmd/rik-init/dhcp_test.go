//go:build linux

package main

import (
	"net"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

func TestParseAck(t *testing.T) {
	base := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
		dhcpv4.WithYourIP(net.ParseIP("10.63.0.5")),
		dhcpv4.WithNetmask(net.CIDRMask(16, 32)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("169.254.254.1"))),
	}
	def := dhcpRoute{Dst: netip.MustParsePrefix("0.0.0.0/0"), Via: netip.MustParseAddr("10.63.0.1")}
	tests := []struct {
		name    string
		mods    []dhcpv4.Modifier
		want    dhcpLease
		wantErr bool
	}{
		{"router, dns, hostname", []dhcpv4.Modifier{
			dhcpv4.WithRouter(net.ParseIP("10.63.0.1")),
			dhcpv4.WithDNS(net.ParseIP("10.0.0.53"), net.ParseIP("10.0.0.54")),
			dhcpv4.WithOption(dhcpv4.OptHostName("fn-a")),
		}, dhcpLease{IP: netip.MustParsePrefix("10.63.0.5/16"), Routes: []dhcpRoute{def},
			DNS: []netip.Addr{netip.MustParseAddr("10.0.0.53"), netip.MustParseAddr("10.0.0.54")}, Hostname: "fn-a",
			Server: netip.MustParseAddr("169.254.254.1")}, false},
		{"classless routes replace the router", []dhcpv4.Modifier{
			dhcpv4.WithRouter(net.ParseIP("10.63.0.99")),
			dhcpv4.WithOption(dhcpv4.OptClasslessStaticRoute(
				&dhcpv4.Route{Dest: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Router: net.ParseIP("10.63.0.1")},
				&dhcpv4.Route{Dest: &net.IPNet{IP: net.ParseIP("10.200.0.0").To4(), Mask: net.CIDRMask(16, 32)}, Router: net.ParseIP("10.63.0.2")})),
		}, dhcpLease{IP: netip.MustParsePrefix("10.63.0.5/16"), Server: netip.MustParseAddr("169.254.254.1"),
			Routes: []dhcpRoute{def, {Dst: netip.MustParsePrefix("10.200.0.0/16"), Via: netip.MustParseAddr("10.63.0.2")}}}, false},
		{"no address", []dhcpv4.Modifier{dhcpv4.WithYourIP(net.IPv4zero)}, dhcpLease{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ack, err := dhcpv4.New(append(append([]dhcpv4.Modifier{}, base...), tt.mods...)...)
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseAck(ack)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseAck: err %v, want error %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); !tt.wantErr && diff != "" {
				t.Errorf("parseAck (-want +got):\n%s", diff)
			}
		})
	}
}
