package cni

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/rik-org/rik/internal/riklet/podnet"
	"github.com/rik-org/rik/internal/testutil"
	"github.com/rik-org/rik/internal/workload"
)

// fakePlugins is a stateful CNI: one address per container from
// 10.89.0.0/24, a cache of the configuration each was added with.
type fakePlugins struct {
	mu       sync.Mutex
	next     byte
	added    map[string]netip.Addr // by container id
	cache    map[string][]byte     // configuration of each ADD
	rts      map[string]*libcni.RuntimeConf
	checks   []string // plugin types of the last CHECK
	checkErr error
	addErr   error
}

func newFakePlugins() *fakePlugins {
	return &fakePlugins{next: 2, added: map[string]netip.Addr{}, cache: map[string][]byte{}, rts: map[string]*libcni.RuntimeConf{}}
}

func (f *fakePlugins) AddNetworkList(_ context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (types.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cache[rt.ContainerID], f.rts[rt.ContainerID] = list.Bytes, rt // cached before the plugins run, as libcni does
	if f.addErr != nil {
		return nil, f.addErr
	}
	ip := netip.AddrFrom4([4]byte{10, 89, 0, f.next})
	f.next++
	f.added[rt.ContainerID] = ip
	return &current.Result{CNIVersion: "1.0.0", IPs: []*current.IPConfig{{
		Address: net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(24, 32)}, Gateway: net.IPv4(10, 89, 0, 1)}}}, nil
}

func (f *fakePlugins) CheckNetworkList(_ context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checks = nil
	for _, p := range list.Plugins {
		f.checks = append(f.checks, p.Network.Type)
	}
	if _, ok := f.added[rt.ContainerID]; !ok {
		return errors.New("not added")
	}
	return f.checkErr
}

func (f *fakePlugins) DelNetworkList(_ context.Context, _ *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.added, rt.ContainerID)
	delete(f.cache, rt.ContainerID)
	delete(f.rts, rt.ContainerID)
	return nil
}

func (f *fakePlugins) GetNetworkListCachedConfig(_ *libcni.NetworkConfigList, rt *libcni.RuntimeConf) ([]byte, *libcni.RuntimeConf, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cache[rt.ContainerID], f.rts[rt.ContainerID], nil
}

const testConf = `{"cniVersion": "1.0.0", "name": "rik-test", "plugins": [
  {"type": "bridge", "bridge": "cnit0", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.89.0.0/24"}]]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}`

func newTestManager(t *testing.T, p Plugins, state string) *Manager {
	t.Helper()
	conf := t.TempDir()
	if err := os.WriteFile(filepath.Join(conf, "10-rik.conflist"), []byte(testConf), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{ConfDir: conf, StateDir: state, Plugins: p})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSetupCheckTeardown(t *testing.T) {
	testutil.RequireRoot(t) // network namespaces
	p, state := newFakePlugins(), t.TempDir()
	m := newTestManager(t, p, state)
	ctx := context.Background()
	n, err := m.SetupWithPorts(ctx, "pod-a", []workload.PortMapping{{Port: 8080, TargetPort: 80}, {TargetPort: 9090}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Teardown(ctx, "pod-a") })
	if n.IP != netip.MustParseAddr("10.89.0.2") || n.Gateway != netip.MustParseAddr("10.89.0.1") || !podnet.IsNetns(n.NetnsPath) {
		t.Fatalf("network %+v", n)
	}
	pm, _ := json.Marshal(p.rts["pod-a"].CapabilityArgs["portMappings"])
	if string(pm) != `[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]` {
		t.Errorf("portMappings %s", pm)
	}
	if again, err := m.Setup(ctx, "pod-a"); err != nil || again != n {
		t.Errorf("Setup again: %+v, %v", again, err)
	}

	// A restarted riklet: CHECK (without portmap) on the first Get.
	m2 := newTestManager(t, p, state)
	if got, ok := m2.Get("pod-a"); !ok || got != n {
		t.Fatalf("Get after restart: %+v, %v", got, ok)
	}
	if !slices.Equal(p.checks, []string{"bridge"}) {
		t.Errorf("CHECK ran %v, want bridge only", p.checks)
	}
	m3 := newTestManager(t, p, state)
	p.checkErr = errors.New("veth gone")
	if _, ok := m3.Get("pod-a"); ok {
		t.Error("Get: a network failing its CHECK is reported present")
	}
	if owners, err := m3.Owners(); err != nil || !slices.Equal(owners, []string{"pod-a"}) {
		t.Errorf("Owners = %v, %v", owners, err)
	}

	// DEL with the cached configuration, even after the directory changed.
	if err := os.WriteFile(filepath.Join(m3.cfg.ConfDir, "10-rik.conflist"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := m3.Teardown(ctx, "pod-a"); err != nil {
		t.Fatal(err)
	}
	if _, ok := p.added["pod-a"]; ok || podnet.IsNetns(n.NetnsPath) {
		t.Fatalf("after Teardown: added %v, netns %v", p.added, podnet.IsNetns(n.NetnsPath))
	}
	if owners, _ := m3.Owners(); len(owners) != 0 {
		t.Errorf("Owners after Teardown = %v", owners)
	}
}

func TestSetupRollsBackAFailedAdd(t *testing.T) {
	testutil.RequireRoot(t)
	p := newFakePlugins()
	p.addErr = errors.New("bridge: no such device")
	m := newTestManager(t, p, t.TempDir())
	if _, err := m.Setup(context.Background(), "pod-b"); err == nil {
		t.Fatal("Setup: no error from a failed ADD")
	}
	if owners, err := m.Owners(); err != nil || len(owners) != 0 {
		t.Fatalf("left behind: %v, %v", owners, err)
	}
	if _, ok := p.cache["pod-b"]; ok {
		t.Error("the failed ADD was not deleted")
	}
}

func TestBadInput(t *testing.T) {
	m := newTestManager(t, newFakePlugins(), t.TempDir())
	if _, err := m.Setup(context.Background(), "../x"); err == nil {
		t.Error("Setup with a bad id: no error")
	}
	for _, port := range []int{22, 80, 4995} { // reserved, system, rik's
		if _, err := m.SetupWithPorts(context.Background(), "pod-c", []workload.PortMapping{{Port: port, TargetPort: 80}}); err == nil {
			t.Errorf("host port %d: not refused", port)
		}
	}
	if _, ok := m.Get("../x"); ok {
		t.Error("Get with a bad id: found")
	}
	empty := t.TempDir()
	if _, err := NetworkList(empty); err == nil {
		t.Error("NetworkList of an empty directory: no error")
	}
}

func TestRecordOf(t *testing.T) {
	v6only := &current.Result{CNIVersion: "1.0.0", IPs: []*current.IPConfig{{Address: net.IPNet{IP: net.ParseIP("fd00::2"), Mask: net.CIDRMask(64, 128)}}}}
	if _, err := recordOf("n", v6only); err == nil {
		t.Error("a result without IPv4: no error")
	}
}

func TestBridgeName(t *testing.T) {
	dir := t.TempDir()
	if got := BridgeName(dir); got != "" {
		t.Errorf("no configuration: %q", got)
	}
	if err := os.WriteFile(filepath.Join(dir, "10-rik.conflist"), []byte(testConf), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := BridgeName(dir); got != "cnit0" {
		t.Errorf("BridgeName = %q, want cnit0", got)
	}
	other := t.TempDir()
	conf := `{"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "bridge", "ipam": {}}]}`
	if err := os.WriteFile(filepath.Join(other, "a.conflist"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := BridgeName(other); got != "cni0" {
		t.Errorf("BridgeName without a name = %q, want cni0", got)
	}
}

// TestCheck: Check (what bridgenet runs for an adopted Function) runs CHECK
// with the cached configuration, without portmap, every time it is asked,
// and reports its error; an id without a network fails.
func TestCheck(t *testing.T) {
	testutil.RequireRoot(t) // network namespaces
	p, state := newFakePlugins(), t.TempDir()
	m := newTestManager(t, p, state)
	ctx := context.Background()
	if err := m.Check("fn-a"); err == nil {
		t.Error("Check of an id never added: no error")
	}
	if err := m.Check("../x"); err == nil {
		t.Error("Check of a bad id: no error")
	}
	if _, err := m.Setup(ctx, "fn-a"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Teardown(ctx, "fn-a") })
	m2 := newTestManager(t, p, state)
	for range 2 {
		p.checks = nil
		if err := m2.Check("fn-a"); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(p.checks, []string{"bridge"}) {
			t.Errorf("CHECK ran %v, want bridge only", p.checks)
		}
	}
	p.checkErr = errors.New("veth gone")
	if err := m2.Check("fn-a"); !errors.Is(err, p.checkErr) {
		t.Errorf("Check = %v, want the plugins' error", err)
	}
}
