package sdn

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/rik-org/rik/internal/workload"
)

// ErrPortRefused: the node does not map this host port (a system port,
// one of rik's, one of the node's reserved ports).
var ErrPortRefused = errors.New("refused by the node")

// admitPorts checks the normalised ports id asks for before they are
// mapped, the one place both Pods and Functions go through: no port
// another instance exposes, none the node's policy refuses, and no new
// one with a socket listening on it in the node's namespace (the DNAT
// rule would take its traffic). The caller holds m.mu.
func (m *Manager) admitPorts(ctx context.Context, id string, ports []workload.PortMapping) error {
	if err := m.st.conflict(id, ports); err != nil {
		return err
	}
	policy := workload.Policy{ReservedPorts: m.cfg.ReservedPorts}
	mapped := map[string]bool{} // already mapped for id: a re-apply, not a new mapping
	for _, p := range m.st[id].Ports {
		mapped[portKey(p)] = true
	}
	var fresh []workload.PortMapping
	for _, p := range ports {
		if why := policy.HostPortRefused(p.Port); why != "" {
			return fmt.Errorf("%s: %w", why, ErrPortRefused)
		}
		if !mapped[portKey(p)] {
			fresh = append(fresh, p)
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	var listening map[string]bool
	err := m.inNetns(func() error {
		var err error
		listening, err = m.host.ListeningPorts(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("checking host ports: %w", err)
	}
	for _, p := range fresh {
		if listening[portKey(p)] {
			return fmt.Errorf("host port %d/%s: a socket on the node listens on it: %w", p.Port, p.Protocol, ErrPortConflict)
		}
	}
	return nil
}

// ListeningPorts lists the ports ("tcp port 22", "udp port 53") with a
// socket listening on them in the calling thread's network namespace,
// from /proc/thread-self/net/{tcp,tcp6,udp,udp6}.
func (netlinkHost) ListeningPorts(context.Context) (map[string]bool, error) {
	out := map[string]bool{}
	for _, f := range []string{"tcp", "tcp6", "udp", "udp6"} {
		data, err := os.ReadFile("/proc/thread-self/net/" + f)
		if errors.Is(err, os.ErrNotExist) && strings.HasSuffix(f, "6") {
			continue // no IPv6 on this host
		}
		if err != nil {
			return nil, fmt.Errorf("reading listening sockets: %w", err)
		}
		proto := strings.TrimSuffix(f, "6")
		ports, err := parseProcNet(data, proto == "udp")
		if err != nil {
			return nil, fmt.Errorf("reading /proc/net/%s: %w", f, err)
		}
		for _, p := range ports {
			out[portKey(workload.PortMapping{Protocol: proto, Port: p})] = true
		}
	}
	return out, nil
}

// Socket states in /proc/net/{tcp,udp}.
const (
	tcpListen = "0A"
	udpClose  = "07" // an unconnected UDP socket: what serves on a port
)

// parseProcNet returns the local ports of the listening sockets of a
// /proc/net/{tcp,tcp6,udp,udp6} table: TCP sockets in LISTEN, and UDP
// sockets bound but not connected to a peer (a connected one is a
// client's). Any address counts: a DNAT rule catches every local one.
func parseProcNet(data []byte, udp bool) ([]int, error) {
	var ports []int
	sc := bufio.NewScanner(bytes.NewReader(data))
	for first := true; sc.Scan(); first = false {
		f := strings.Fields(sc.Text())
		if first || len(f) == 0 {
			continue // the header
		}
		if len(f) < 4 {
			return nil, fmt.Errorf("short line %q", sc.Text())
		}
		local, remote, st := f[1], f[2], f[3]
		_, lport, ok1 := cutLast(local)
		_, rport, ok2 := cutLast(remote)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("bad address in %q", sc.Text())
		}
		port, err := strconv.ParseUint(lport, 16, 16)
		if err != nil {
			return nil, fmt.Errorf("bad port in %q", sc.Text())
		}
		switch {
		case !udp && st == tcpListen, udp && st == udpClose && rport == "0000":
			ports = append(ports, int(port))
		}
	}
	return ports, sc.Err()
}

// cutLast splits "ADDR:PORT" at its last colon.
func cutLast(s string) (string, string, bool) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}
