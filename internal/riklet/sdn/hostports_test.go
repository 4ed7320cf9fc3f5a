package sdn

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/rik-org/rik/internal/testutil"
	"github.com/rik-org/rik/internal/testutil/netns"
	"github.com/rik-org/rik/internal/workload"
)

const procNetHeader = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"

func TestParseProcNet(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		udp     bool
		want    []int
		wantErr bool
	}{
		{name: "header only", data: procNetHeader},
		{name: "empty", data: ""},
		{name: "tcp", data: procNetHeader +
			"   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17815 1 0000000000000000 100 0 0 10 0\n" +
			"   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17816 1 0000000000000000 100 0 0 10 0\n" +
			"   2: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 17817 1 0000000000000000 20 4 30 10 -1\n" +
			"   3: 0100007F:D431 0100007F:0016 06 00000000:00000000 03:00000E37 00000000     0        0 0 3 0000000000000000\n",
			want: []int{22, 8080}},
		{name: "tcp6", data: procNetHeader +
			"   0: 00000000000000000000000000000000:1388 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20462 1 0000000000000000 100 0 0 10 0\n" +
			"   1: 0000000000000000FFFF00000100007F:0050 0000000000000000FFFF00000100007F:A3B2 01 00000000:00000000 00:00000000 00000000     0        0 20463 1 0000000000000000 20 4 30 10 -1\n",
			want: []int{5000}},
		{name: "udp", udp: true, data: procNetHeader +
			"  100: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 16000 2 0000000000000000 0\n" +
			"  101: 0F02000A:E1A4 08080808:0035 01 00000000:00000000 00:00000000 00000000     0        0 16001 2 0000000000000000 0\n" +
			"  102: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 16002 2 0000000000000000 0\n",
			want: []int{53, 5353}},
		{name: "tcp states are not udp's", data: procNetHeader +
			"  100: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 16000 2 0000000000000000 0\n"},
		{name: "short line", data: procNetHeader + "   0: 00000000:0016\n", wantErr: true},
		{name: "bad port", data: procNetHeader + "   0: 00000000:XYZ 00000000:0000 0A\n", wantErr: true},
		{name: "no port", data: procNetHeader + "   0: 00000000 00000000:0000 0A\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcNet([]byte(tt.data), tt.udp)
			if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
				t.Errorf("parseProcNet = %v, %v; want %v, err=%v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// The node refuses system ports, rik's, its reserved ones, and a new
// mapping of a port with a listening socket; for pods and functions
// alike, leaving nothing behind.
func TestAdmitPorts(t *testing.T) {
	ctx := context.Background()
	cfg := Config{StateDir: t.TempDir(), ReservedPorts: []int{9000}}
	b, host := newTestBackend(FirewallNftables), newFakeHost()
	m, err := newManager(ctx, cfg, b.fw, host)
	if err != nil {
		t.Fatal(err)
	}
	host.listen("tcp", 8080)
	host.listen("udp", 5353)
	pod := netip.MustParseAddr("10.63.0.5")
	tests := []struct {
		port     workload.PortMapping
		want     error
		msg      string
		function bool
	}{
		{workload.PortMapping{Port: 22, TargetPort: 22}, ErrPortRefused, "exposing p: host port 22 is below 1024 (system ports): refused by the node", false},
		{workload.PortMapping{Port: 4995, TargetPort: 80}, ErrPortRefused, "exposing p: host port 4995 is used by rik: refused by the node", false},
		{workload.PortMapping{Port: 9000, TargetPort: 80, Protocol: "UDP"}, ErrPortRefused, "exposing p: host port 9000 is reserved: refused by the node", false},
		{workload.PortMapping{Port: 8080, TargetPort: 80}, ErrPortConflict, "exposing p: host port 8080/TCP: a socket on the node listens on it: host port already in use", false},
		{workload.PortMapping{Port: 5353, Protocol: "udp"}, ErrPortConflict, "exposing p: host port 5353/UDP: a socket on the node listens on it: host port already in use", false},
		{workload.PortMapping{Port: 22, TargetPort: 22}, ErrPortRefused, "setting up network of f: host port 22 is below 1024 (system ports): refused by the node", true},
		{workload.PortMapping{Port: 8080, TargetPort: 80}, ErrPortConflict, "setting up network of f: host port 8080/TCP: a socket on the node listens on it", true},
	}
	for _, tt := range tests {
		var err error
		if tt.function {
			_, err = m.SetupFunction(ctx, "f", []workload.PortMapping{tt.port})
		} else {
			err = m.Expose(ctx, "p", pod, []workload.PortMapping{{Port: 18000, TargetPort: 1}, tt.port})
		}
		if !errors.Is(err, tt.want) || !strings.HasPrefix(err.Error(), tt.msg) {
			t.Errorf("%+v: err = %v\n want %v: %s", tt.port, err, tt.want, tt.msg)
		}
	}
	if len(b.mappings(t)) != 0 || len(m.st) != 0 {
		t.Errorf("refused mappings left mappings %v, state %v", b.mappings(t), m.st)
	}
	if taps, _ := host.Taps(ctx); len(taps) != 0 {
		t.Errorf("refused function left taps %v", taps)
	}
	if _, leased := m.pool.Lookup("f"); leased {
		t.Error("refused function kept its lease")
	}

	// The same port, other protocol: free. A socket that appears on a port
	// already mapped does not undo the mapping when it is applied again.
	if err := m.Expose(ctx, "p", pod, []workload.PortMapping{{Port: 8080, TargetPort: 80, Protocol: "UDP"}, {Port: 18001}}); err != nil {
		t.Fatalf("Expose: %v", err)
	}
	host.listen("tcp", 18001)
	if err := m.Expose(ctx, "p", pod, []workload.PortMapping{{Port: 8080, TargetPort: 80, Protocol: "UDP"}, {Port: 18001}}); err != nil {
		t.Errorf("Expose again: %v", err)
	}
	if len(b.mappings(t)) != 2 {
		t.Errorf("mappings: %v", b.mappings(t))
	}
	// Without a reserved list, the node's default (22) still stands, and
	// rik's ports and the system's.
	m2, _ := newManager(ctx, Config{StateDir: t.TempDir()}, newTestBackend(FirewallNftables).fw, newFakeHost())
	for _, port := range []int{22, 80, 4996, 5000} {
		if err := m2.Expose(ctx, "q", pod, []workload.PortMapping{{Port: port}}); !errors.Is(err, ErrPortRefused) {
			t.Errorf("default policy, port %d: %v", port, err)
		}
	}
}

// failingHost cannot list sockets: the node then maps no new port.
type failingHost struct{ *fakeHost }

func (failingHost) ListeningPorts(context.Context) (map[string]bool, error) {
	return nil, errors.New("no /proc")
}

func TestAdmitPortsFailsClosed(t *testing.T) {
	m, err := newManager(context.Background(), Config{StateDir: t.TempDir()}, newTestBackend(FirewallNftables).fw, failingHost{newFakeHost()})
	if err != nil {
		t.Fatal(err)
	}
	err = m.Expose(context.Background(), "p", netip.MustParseAddr("10.63.0.5"), []workload.PortMapping{{Port: 18080}})
	if err == nil || !strings.Contains(err.Error(), "checking host ports: no /proc") {
		t.Errorf("Expose without a socket list: %v", err)
	}
}

// Root: a real listening socket on 127.0.0.1 in the node's namespace makes
// the mapping of its port refused, with the reason.
func TestAdmitPortsSeesRealListeners(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "ip")
	ns := netns.New(t)
	ns.Run(t, "ip", "link", "set", "lo", "up")
	ns.Serve(t, "127.0.0.1:18090", nil)
	var got map[string]bool
	if err := ns.Do(func() error {
		var err error
		got, err = netlinkHost{}.ListeningPorts(context.Background())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !got["tcp port 18090"] || len(got) != 1 {
		t.Errorf("listening in the namespace = %v, want only tcp port 18090", got)
	}
	// The Manager reads the namespace it programs (Config.Netns).
	m, err := newManager(context.Background(), Config{StateDir: t.TempDir(), Netns: ns.Path}, newTestBackend(FirewallNftables).fw, netlinkHost{})
	if err != nil {
		t.Fatal(err)
	}
	err = m.Expose(context.Background(), "p", netip.MustParseAddr("10.63.0.5"), []workload.PortMapping{{Port: 18090, TargetPort: 80}})
	if !errors.Is(err, ErrPortConflict) || err.Error() != "exposing p: host port 18090/TCP: a socket on the node listens on it: host port already in use" {
		t.Errorf("Expose of a port with a listener: %v", err)
	}
	if err := m.Expose(context.Background(), "p", netip.MustParseAddr("10.63.0.5"), []workload.PortMapping{{Port: 18091, TargetPort: 80}}); err != nil {
		t.Errorf("Expose of a free port: %v", err)
	}
}
