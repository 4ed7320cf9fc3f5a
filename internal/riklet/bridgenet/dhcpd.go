package bridgenet

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"

	"github.com/rik-org/rik/internal/nsenter"
)

// Lease is what a Function's guest gets by DHCP: its pod address, gateway
// and routes, DNS servers and hostname. Only MAC gets an answer.
type Lease struct {
	MAC net.HardwareAddr `json:"mac"`
	Addressing
	DNS      []netip.Addr `json:"dns,omitempty"`
	Hostname string       `json:"hostname,omitempty"`
}

// infinite is the lease time: the address is the guest's for its life, so
// it never renews (and never needs the server while it runs).
const infinite = 0xffffffff * time.Second

// reply is the server's answer to req (no I/O): an offer to a discover, an
// ack to a request for l's address (a nak for another one), nothing
// (nil) to anything else or from any other MAC.
func reply(l Lease, req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	if req.OpCode != dhcpv4.OpcodeBootRequest || req.ClientHWAddr.String() != l.MAC.String() {
		return nil, nil
	}
	var typ dhcpv4.MessageType
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		typ = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		typ = dhcpv4.MessageTypeAck
		if !requests(req, l.IP.Addr()) {
			typ = dhcpv4.MessageTypeNak
		}
	default:
		return nil, nil
	}
	server := ServerAddr.Addr().AsSlice()
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithServerIP(server),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(server)),
	}
	if typ != dhcpv4.MessageTypeNak {
		mods = append(mods, leaseOptions(l)...)
	}
	resp, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		return nil, fmt.Errorf("building dhcp %s: %w", typ, err)
	}
	return resp, nil
}

// answer is reply to the packet b, which the guest controls: anything
// but a DHCP request from l.MAC gets no answer.
func answer(l Lease, b []byte) (*dhcpv4.DHCPv4, error) {
	req, err := dhcpv4.FromBytes(b)
	if err != nil {
		return nil, nil // not DHCP: ignored
	}
	return reply(l, req)
}

// requests reports whether req asks for ip (or for no address in
// particular).
func requests(req *dhcpv4.DHCPv4, ip netip.Addr) bool {
	want := req.RequestedIPAddress()
	if want == nil || want.IsUnspecified() {
		want = req.ClientIPAddr
	}
	if want == nil || want.IsUnspecified() {
		return true
	}
	got, ok := netip.AddrFromSlice(want.To4())
	return ok && got == ip
}

func leaseOptions(l Lease) []dhcpv4.Modifier {
	mods := []dhcpv4.Modifier{
		dhcpv4.WithYourIP(l.IP.Addr().AsSlice()),
		dhcpv4.WithNetmask(net.CIDRMask(l.IP.Bits(), 32)),
		dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(infinite)),
	}
	if l.Gateway.IsValid() {
		mods = append(mods, dhcpv4.WithRouter(l.Gateway.AsSlice()))
	}
	if len(l.Routes) > 0 {
		// A client that takes classless routes ignores the router option
		// (RFC 3442): the default route goes in them too.
		var rs []*dhcpv4.Route
		if l.Gateway.IsValid() {
			rs = append(rs, &dhcpv4.Route{Dest: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Router: l.Gateway.AsSlice()})
		}
		for _, r := range l.Routes {
			rs = append(rs, &dhcpv4.Route{Dest: &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), 32)}, Router: r.Via.AsSlice()})
		}
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClasslessStaticRoute(rs...)))
	}
	if len(l.DNS) > 0 {
		ips := make([]net.IP, len(l.DNS))
		for i, d := range l.DNS {
			ips[i] = d.AsSlice()
		}
		mods = append(mods, dhcpv4.WithDNS(ips...))
	}
	if l.Hostname != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(l.Hostname)))
	}
	return mods
}

// Server is a DHCPv4 server bound to br0 inside one Function's namespace.
//
// Why a goroutine and not a helper process: a socket keeps the network
// namespace it was made in. The server's socket is opened on a throwaway
// OS thread that enters the namespace (nsenter.Do) and dies after; the
// serving goroutine then runs on any thread of the riklet, in no
// namespace of its own, and only reads and writes that socket. Nothing
// else ever runs in the namespace, there is no process to track, kill or
// find again after a crash, and closing the socket ends the server.
type Server struct {
	conn net.PacketConn
	log  *slog.Logger
	done chan struct{}
}

// Serve opens the server's socket in the namespace at nsPath and answers
// l.MAC until Close.
func Serve(nsPath string, l Lease, log *slog.Logger) (*Server, error) {
	var conn net.PacketConn
	err := nsenter.Do(nsPath, func() error {
		c, err := server4.NewIPv4UDPConn(BridgeDev, &net.UDPAddr{Port: dhcpv4.ServerPort})
		conn = c
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("opening dhcp server socket in %s: %w", nsPath, err)
	}
	s := &Server{conn: conn, log: log, done: make(chan struct{})}
	go s.serve(l)
	return s, nil
}

func (s *Server) serve(l Lease) {
	defer close(s.done)
	buf := make([]byte, 4096)
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
	for {
		n, _, err := s.conn.ReadFrom(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Warn("dhcp server stopped", "mac", l.MAC.String(), "err", err)
			}
			return
		}
		resp, err := answer(l, buf[:n])
		if err != nil {
			s.log.Warn("dhcp server", "err", err)
			continue
		}
		if resp == nil {
			continue
		}
		// The guest has no address yet: broadcast on br0 (the guard keeps
		// it off the veth).
		if _, err := s.conn.WriteTo(resp.ToBytes(), bcast); err != nil {
			s.log.Warn("dhcp server: answering", "mac", l.MAC.String(), "err", err)
			continue
		}
		s.log.Info("dhcp answered", "mac", l.MAC.String(), "type", resp.MessageType(), "ip", l.IP)
	}
}

// Close stops the server and waits for it to end.
func (s *Server) Close() error {
	err := s.conn.Close()
	<-s.done
	return err
}
