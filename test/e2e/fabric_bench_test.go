package e2e

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/testutil/netns"
)

// BenchmarkFleetPodToPod measures pod-to-pod TCP round trips (1 byte each
// way, ns/op) and throughput (64 KiB writes, MB/s) between two pods on one
// node, on two nodes of one segment (direct routes, and VXLAN forced with
// --fabric vxlan) and on two nodes of two segments (VXLAN through a router
// namespace).
func BenchmarkFleetPodToPod(b *testing.B) {
	for _, tc := range []struct {
		name   string
		routed bool
		args   []string
	}{{"host-gw", false, nil}, {"vxlan-one-segment", false, []string{"--fabric", "vxlan"}}, {"vxlan", true, nil}} {
		f := fleetCluster(b, tc.routed, tc.args...)
		f.subnets()
		a1, a2 := f.podPair("web", 8080)
		pairs := []struct {
			name string
			from *netns.NS
			to   string
			toNS *netns.NS
		}{{"across-" + tc.name, podNS(f.n1, a1), a2.Value.IP, podNS(f.n2, a2)}}
		if tc.name == "host-gw" {
			s1, _ := f.podPair("side", 8081)
			pairs = append(pairs, struct {
				name string
				from *netns.NS
				to   string
				toNS *netns.NS
			}{"same-node", podNS(f.n1, a1), s1.Value.IP, podNS(f.n1, s1)})
		}
		for _, p := range pairs {
			addr := net.JoinHostPort(p.to, "7100")
			serveBench(b, p.toNS, addr)
			b.Run(p.name+"/rtt", func(b *testing.B) { benchRTT(b, p.from, addr) })
			b.Run(p.name+"/throughput", func(b *testing.B) { benchThroughput(b, p.from, addr) })
		}
	}
}

// serveBench serves in ns on addr: the first byte of a connection says
// what it is: 'e' echoes every byte back, 'd' discards all it reads and
// answers with the count when the writer is done.
func serveBench(b *testing.B, ns *netns.NS, addr string) {
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() { // ends when the listener is closed
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				kind := make([]byte, 1)
				if _, err := io.ReadFull(c, kind); err != nil {
					return
				}
				if kind[0] == 'e' {
					_, _ = io.Copy(c, c)
					return
				}
				n, _ := io.Copy(io.Discard, c)
				_ = binary.Write(c, binary.BigEndian, n)
			}()
		}
	}()
}

func dialFrom(b *testing.B, ns *netns.NS, addr string, kind byte) *net.TCPConn {
	var c net.Conn
	if err := ns.Do(func() (err error) { c, err = net.DialTimeout("tcp", addr, 5*time.Second); return err }); err != nil {
		b.Fatal(err)
	}
	if _, err := c.Write([]byte{kind}); err != nil {
		b.Fatal(err)
	}
	return c.(*net.TCPConn)
}

func benchRTT(b *testing.B, from *netns.NS, addr string) {
	c := dialFrom(b, from, addr, 'e')
	defer c.Close()
	buf := []byte{1}
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}

func benchThroughput(b *testing.B, from *netns.NS, addr string) {
	c := dialFrom(b, from, addr, 'd')
	defer c.Close()
	chunk := make([]byte, 64<<10)
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.CloseWrite(); err != nil {
		b.Fatal(err)
	}
	var n int64
	if err := binary.Read(c, binary.BigEndian, &n); err != nil || n != int64(b.N*len(chunk)) {
		b.Fatalf("server read %d bytes (%v), want %d", n, err, b.N*len(chunk))
	}
	b.StopTimer()
}
