package function

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/riklet/bridgenet"
	"github.com/rik-org/rik/internal/riklet/podnet"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/riklet/sdn"
	"github.com/rik-org/rik/internal/riklet/vmm"
	"github.com/rik-org/rik/internal/testutil/netns"
	"github.com/rik-org/rik/internal/workload"
	"golang.org/x/sys/unix"
)

// bridgeEnv is a bridge-mode network in the vmEnv's namespace (its "node"):
// podnet on bridge riktb0 with 10.99.5.0/24, and a "pod" on it.
type bridgeEnv struct {
	fns   *podnet.Manager // the Functions' part of the pod network
	pods  *podnet.Manager // the pods' part: same bridge and pool, as the riklet wires them
	ports *sdn.Manager    // DNAT of host ports, in the "node" namespace
}

func newBridgeEnv(t testing.TB, e *vmEnv) *bridgeEnv {
	t.Helper()
	cidr := netip.MustParsePrefix("10.99.5.0/24")
	pool, err := podnet.OpenPool(t.TempDir(), cidr)
	if err != nil {
		t.Fatal(err)
	}
	podPool, fnPool := bridgenet.SplitPool(pool)
	fns, err := podnet.New(podnet.Config{StateDir: t.TempDir(), HostNetns: e.net.path(),
		CIDR: cidr, Bridge: "riktb0", VethPrefix: "rikf", IPAM: fnPool})
	if err != nil {
		t.Fatal(err)
	}
	pods, err := podnet.New(podnet.Config{StateDir: t.TempDir(), HostNetns: e.net.path(), CIDR: cidr, Bridge: "riktb0", IPAM: podPool})
	if err != nil {
		t.Fatal(err)
	}
	ports, err := sdn.New(context.Background(), sdn.Config{StateDir: t.TempDir(), Netns: e.net.path(), PodCIDR: cidr, PodBridge: "riktb0"})
	if err != nil {
		t.Fatal(err)
	}
	return &bridgeEnv{fns: fns, pods: pods, ports: ports}
}

// config is e's runtime configuration in bridge mode, with a new
// bridgenet.Manager (one per runtime, as the riklet has).
func (b *bridgeEnv) config(t testing.TB, e *vmEnv, logger *slog.Logger) Config {
	t.Helper()
	m, err := bridgenet.New(bridgenet.Config{Pods: b.fns, Ports: b.ports, Logger: logger,
		DNS: []netip.Addr{netip.MustParseAddr("10.99.5.53")}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.config(logger)
	cfg.BridgeNetwork, cfg.NetworkMode = m, workload.NetworkBridge
	return cfg
}

// TestBridgeVM boots a real microVM in bridge mode: its guest gets the pod
// address by DHCP (its console says so), serves HTTP at that address to
// the node and to a pod on the same bridge, is adopted by a restarted
// runtime (which serves DHCP again) and leaves nothing once stopped.
func TestBridgeVM(t *testing.T) {
	e := newVMEnv(t)
	b := newBridgeEnv(t, e)
	ctx := context.Background()
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	r1, err := New(ctx, b.config(t, e, logger), nil)
	if err != nil {
		t.Fatal(err)
	}
	a := fnInstance("aaaaaaaa-0000-4000-8000-0000000000b1", e.rootfsURL, "")
	st, err := r1.Start(ctx, a)
	if err != nil {
		t.Fatalf("Start: %v\n%s", err, logs)
	}
	if st.IP != "10.99.5.2" {
		t.Fatalf("Start = %+v, want RUNNING at the pod address 10.99.5.2", st)
	}
	s, err := readState(r1.dir + "/" + a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(s.VMM.Cmdline, "rik.ip=") || s.VMM.Netns != "" || s.VMM.TapNetns == "" {
		t.Errorf("vmm config: cmdline %q, netns %q, tap netns %q; want no rik.ip, the TAP's netns only for its fd", s.VMM.Cmdline, s.VMM.Netns, s.VMM.TapNetns)
	}
	if got := e.get(t, "http://10.99.5.2/", 90*time.Second); got != e.page {
		t.Fatalf("GET from the node = %q", got)
	}
	var out bytes.Buffer
	if err := r1.Logs(ctx, a, runtime.LogOptions{}, &out); err != nil || !strings.Contains(out.String(), "eth0 10.99.5.2/24 by DHCP from 169.254.254.1") ||
		!strings.Contains(out.String(), `hostname "fn-aaaaa"`) || !strings.Contains(out.String(), "10.99.5.53") {
		t.Errorf("console lacks the DHCP lease: %v\n%s", err, out.String())
	}
	checkSandboxed(t, e, a.ID, DefaultVMUIDFirst)
	var fnNS unix.Stat_t
	if err := unix.Stat(s.Net.Netns, &fnNS); err != nil {
		t.Fatal(err)
	}
	if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", s.Process.Pid)); err != nil || ns == fmt.Sprintf("net:[%d]", fnNS.Ino) {
		t.Errorf("QEMU's netns %q (%v) is the Function's: it must only get the TAP's descriptor", ns, err)
	}
	// Its host port is mapped to its pod address (DNAT in the node's OUTPUT).
	if got := e.get(t, "http://10.99.5.1:18080/", 10*time.Second); got != e.page {
		t.Errorf("GET host port = %q", got)
	}
	// A pod on the same bridge reaches the guest at its address.
	pn, err := b.pods.Setup(ctx, "a-pod")
	if err != nil {
		t.Fatal(err)
	}
	defer b.pods.Teardown(ctx, "a-pod")
	pod := &testNetwork{ns: &netns.NS{Path: pn.NetnsPath}}
	if got := getWith(t, pod.client(), "http://10.99.5.2/"); got != e.page {
		t.Errorf("GET from a pod = %q", got)
	}

	// Restart: the VM is adopted and its DHCP server is back.
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}
	cfg2 := b.config(t, e, logger)
	adopted := &adoptRecorder{BridgeNetwork: cfg2.BridgeNetwork}
	cfg2.BridgeNetwork = adopted
	r2, err := New(ctx, cfg2, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if sts, err := r2.Recover(ctx, []runtime.Instance{a}); err != nil || len(sts) != 1 || sts[0].Phase != runtime.PhaseRunning {
		t.Fatalf("Recover = %+v, %v", sts, err)
	}
	if adopted.ids() != a.ID {
		t.Errorf("DHCP servers adopted: %q, want %s", adopted.ids(), a.ID)
	}
	if got := e.get(t, "http://10.99.5.2/", 10*time.Second); got != e.page {
		t.Fatalf("GET adopted guest = %q", got)
	}

	// Restart again, its network failing its check (a CNI CHECK): the VM
	// is not adopted but killed, and reported failed.
	if err := r2.Close(); err != nil {
		t.Fatal(err)
	}
	cfg3 := b.config(t, e, logger)
	cfg3.BridgeNetwork = &adoptRecorder{BridgeNetwork: cfg3.BridgeNetwork, fail: errors.New("CNI CHECK failed")}
	r3, err := New(ctx, cfg3, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r3.Close()
	sts, err := r3.Recover(ctx, []runtime.Instance{a})
	if err != nil || len(sts) != 1 || sts[0].Phase != runtime.PhaseFailed || sts[0].Reason != api.ReasonNetworkFailed {
		t.Fatalf("Recover with a failing network check = %+v, %v; want FAILED %s", sts, err, api.ReasonNetworkFailed)
	}
	if vmm.Alive(s.Process) {
		t.Error("vm whose network failed its check still runs")
	}
	if err := r3.Stop(ctx, a); err != nil {
		t.Fatal(err)
	}
	if vmm.Alive(s.Process) {
		t.Error("vm still runs after Stop")
	}
	if _, err := os.Stat(s.Net.Netns); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("function netns left: %v", err)
	}
	if owners, err := b.fns.Owners(); err != nil || len(owners) != 0 {
		t.Errorf("function network owners after Stop = %v, %v; want none", owners, err)
	}
	if owners, err := b.pods.Owners(); err != nil || len(owners) != 1 || owners[0] != "a-pod" {
		t.Errorf("pod network owners after Stop = %v, %v; want only a-pod", owners, err)
	}
	if body, err := e.net.client().Get("http://10.99.5.1:18080/"); err == nil {
		body.Body.Close()
		t.Errorf("host port still mapped after Stop: %s", body.Status)
	}
}

// getWith fetches url with c once.
func getWith(t testing.TB, c *http.Client, url string) string {
	t.Helper()
	c.Timeout = 10 * time.Second
	resp, err := c.Get(url)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// adoptRecorder records the ids whose DHCP server Adopt started.
// With fail set, Adopt fails as a network failing its check does.
type adoptRecorder struct {
	BridgeNetwork
	fail    error
	mu      sync.Mutex
	adopted []string
}

func (a *adoptRecorder) Adopt(id string, n bridgenet.Net) error {
	if a.fail != nil {
		return a.fail
	}
	a.mu.Lock()
	a.adopted = append(a.adopted, id)
	a.mu.Unlock()
	return a.BridgeNetwork.Adopt(id, n)
}

func (a *adoptRecorder) ids() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return strings.Join(a.adopted, ",")
}

// BenchmarkCreateToReachableBridge is BenchmarkCreateToReachable in bridge
// mode: Start → guest HTTP reachable at its pod address (DHCP included).
func BenchmarkCreateToReachableBridge(b *testing.B) {
	e := newVMEnv(b)
	be := newBridgeEnv(b, e)
	benchCreateToReachable(b, e, be.config(b, e, nil))
}
