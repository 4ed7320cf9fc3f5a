package bridgenet

import (
	"net"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func TestReply(t *testing.T) {
	l := Lease{MAC: net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1},
		Addressing: Addressing{IP: netip.MustParsePrefix("10.63.0.5/16"), Gateway: netip.MustParseAddr("10.63.0.1")},
		Hostname:   "fn"}
	other := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 2}
	msg := func(mac net.HardwareAddr, typ dhcpv4.MessageType, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
		m, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(typ)}, mods...)...)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	tests := []struct {
		name string
		req  *dhcpv4.DHCPv4
		want dhcpv4.MessageType // MessageTypeNone: no answer
	}{
		{"discover", msg(l.MAC, dhcpv4.MessageTypeDiscover), dhcpv4.MessageTypeOffer},
		{"request", msg(l.MAC, dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.63.0.5")))), dhcpv4.MessageTypeAck},
		{"request of another address", msg(l.MAC, dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.63.0.9")))), dhcpv4.MessageTypeNak},
		{"renewal by ciaddr", msg(l.MAC, dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(net.ParseIP("10.63.0.5"))), dhcpv4.MessageTypeAck},
		{"discover from another MAC", msg(other, dhcpv4.MessageTypeDiscover), dhcpv4.MessageTypeNone},
		{"request from another MAC", msg(other, dhcpv4.MessageTypeRequest), dhcpv4.MessageTypeNone},
		{"release", msg(l.MAC, dhcpv4.MessageTypeRelease), dhcpv4.MessageTypeNone},
		{"a reply", msg(l.MAC, dhcpv4.MessageTypeOffer, dhcpv4.WithReply(msg(l.MAC, dhcpv4.MessageTypeDiscover))), dhcpv4.MessageTypeNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := reply(l, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == dhcpv4.MessageTypeNone {
				if got != nil {
					t.Fatalf("answered %s, want no answer", got.MessageType())
				}
				return
			}
			if got == nil || got.MessageType() != tt.want {
				t.Fatalf("answer %v, want %s", got, tt.want)
			}
			if got.TransactionID != tt.req.TransactionID || !got.ServerIdentifier().Equal(ServerAddr.Addr().AsSlice()) {
				t.Errorf("answer xid %v server %v", got.TransactionID, got.ServerIdentifier())
			}
			if tt.want != dhcpv4.MessageTypeNak && (!got.YourIPAddr.Equal(net.ParseIP("10.63.0.5")) || got.HostName() != "fn" ||
				got.IPAddressLeaseTime(0) != infinite) {
				t.Errorf("lease = %s", got.Summary())
			}
		})
	}
}

// FuzzAnswer: whatever the guest sends, the server neither panics nor
// answers another MAC.
func FuzzAnswer(f *testing.F) {
	l := Lease{MAC: net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}, Addressing: Addressing{IP: netip.MustParsePrefix("10.63.0.5/16")}}
	for _, typ := range []dhcpv4.MessageType{dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest} {
		m, err := dhcpv4.New(dhcpv4.WithHwAddr(l.MAC), dhcpv4.WithMessageType(typ))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(m.ToBytes())
	}
	f.Add([]byte{1, 1, 6, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		resp, err := answer(l, b)
		if err == nil && resp != nil && resp.ClientHWAddr.String() != l.MAC.String() {
			t.Fatalf("answered %s", resp.ClientHWAddr)
		}
	})
}
