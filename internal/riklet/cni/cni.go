// Package cni gives pods their network through CNI plugins (libcni): a
// network namespace bound under the state directory, then ADD of the
// first network configuration list of the configuration directory, with
// the pod's port mappings as the portMappings capability (the portmap
// plugin). CHECK runs when a restarted riklet adopts a pod, DEL when the
// pod goes. libcni keeps each ADD's result and configuration in a cache
// under the state directory, so DEL works after a crash, and with the
// configuration the pod was added with even if the directory changed.
package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/rik-org/rik/internal/riklet/podnet"
	"github.com/rik-org/rik/internal/workload"
)

// Defaults of Config.
const (
	DefaultConfDir = "/etc/cni/net.d"
	DefaultBinDir  = "/usr/lib/cni"
	ifName         = "eth0"
	checkTimeout   = 30 * time.Second
)

// Plugins runs CNI operations (libcni.CNIConfig).
type Plugins interface {
	AddNetworkList(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (types.Result, error)
	CheckNetworkList(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error
	DelNetworkList(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error
	GetNetworkListCachedConfig(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) ([]byte, *libcni.RuntimeConf, error)
}

// Config configures a Manager.
type Config struct {
	ConfDir  string // DefaultConfDir: the first .conflist/.conf/.json (by name) is the pods' network
	BinDir   string // DefaultBinDir
	StateDir string // netns under <StateDir>/netns, records under <StateDir>/pods, libcni's cache under <StateDir>/cache
	Plugins  Plugins
	Logger   *slog.Logger
	// ReservedPorts are never published, besides system ports and rik's
	// (workload.Policy); nil: workload.DefaultReservedPorts.
	ReservedPorts []int
}

// record is what the node keeps of a pod's CNI network.
type record struct {
	Network string        `json:"network"` // the configuration list's name
	IP      netip.Addr    `json:"ip"`
	Gateway netip.Addr    `json:"gateway,omitzero"`
	Ports   []portMapping `json:"ports,omitempty"`
}

// portMapping is the portmap plugin's portMappings entry.
type portMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
}

// Manager sets up pod networks with CNI. Safe for concurrent use.
type Manager struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	checked map[string]bool // pods whose CHECK passed since the start
}

// New returns a Manager; the configuration directory is read at each ADD.
func New(cfg Config) (*Manager, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("cni: state dir required")
	}
	if cfg.ConfDir == "" {
		cfg.ConfDir = DefaultConfDir
	}
	if cfg.BinDir == "" {
		cfg.BinDir = DefaultBinDir
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ReservedPorts == nil {
		cfg.ReservedPorts = workload.DefaultReservedPorts
	}
	for _, d := range []string{"netns", "pods", "cache"} {
		if err := os.MkdirAll(filepath.Join(cfg.StateDir, d), 0o700); err != nil {
			return nil, fmt.Errorf("cni: %w", err)
		}
	}
	if cfg.Plugins == nil {
		cfg.Plugins = libcni.NewCNIConfigWithCacheDir([]string{cfg.BinDir}, filepath.Join(cfg.StateDir, "cache"), nil)
	}
	return &Manager{cfg: cfg, log: cfg.Logger, checked: map[string]bool{}}, nil
}

// NetworkList loads the first network configuration of dir.
func NetworkList(dir string) (*libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(dir, []string{".conflist", ".conf", ".json"})
	if err != nil {
		return nil, fmt.Errorf("cni: reading %s: %w", dir, err)
	}
	sort.Strings(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("cni: no network configuration in %s", dir)
	}
	var list *libcni.NetworkConfigList
	if strings.HasSuffix(files[0], ".conflist") {
		list, err = libcni.ConfListFromFile(files[0])
	} else {
		list, err = libcni.NetworkConfFromFile(files[0])
	}
	if err != nil {
		return nil, fmt.Errorf("cni: %s: %w", files[0], err)
	}
	return list, nil
}

// BridgeName is the bridge the first configuration of dir attaches pods
// to (its "bridge" plugin's, "cni0" by default), "" when it has none or
// cannot be read: the node's guards (rik's INPUT rules) cover it as they
// cover rik's own bridge.
func BridgeName(dir string) string {
	list, err := NetworkList(dir)
	if err != nil {
		return ""
	}
	for _, p := range list.Plugins {
		if p.Network == nil || p.Network.Type != "bridge" {
			continue
		}
		var conf struct {
			Bridge string `json:"bridge"`
		}
		if err := json.Unmarshal(p.Bytes, &conf); err != nil {
			return ""
		}
		if conf.Bridge == "" {
			return "cni0"
		}
		return conf.Bridge
	}
	return ""
}

func validID(id string) error {
	if err := workload.ValidInstanceID(id); err != nil {
		return fmt.Errorf("cni: %w", err)
	}
	return nil
}

func (m *Manager) netnsPath(id string) string { return filepath.Join(m.cfg.StateDir, "netns", id) }

// NetnsPath is where pod id's network namespace is bound.
func (m *Manager) NetnsPath(id string) string { return m.netnsPath(id) }
func (m *Manager) recordPath(id string) string {
	return filepath.Join(m.cfg.StateDir, "pods", id+".json")
}

func (m *Manager) runtimeConf(id string, ports []portMapping) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: m.netnsPath(id), IfName: ifName}
	if len(ports) > 0 {
		rt.CapabilityArgs = map[string]any{"portMappings": ports}
	}
	return rt
}

// Setup is SetupWithPorts without ports.
func (m *Manager) Setup(ctx context.Context, id string) (podnet.Net, error) {
	return m.SetupWithPorts(ctx, id, nil)
}

// SetupWithPorts creates pod id's netns and runs ADD, publishing ports
// (those with a node port) through the portmap capability. On error what
// was made is removed. A pod that has a network gets it back.
func (m *Manager) SetupWithPorts(ctx context.Context, id string, ports []workload.PortMapping) (n podnet.Net, err error) {
	if err := validID(id); err != nil {
		return podnet.Net{}, err
	}
	if n, ok := m.lookup(id); ok {
		return n, nil
	}
	policy := workload.Policy{ReservedPorts: m.cfg.ReservedPorts}
	for _, p := range ports {
		if why := policy.HostPortRefused(p.Port); p.Port != 0 && why != "" {
			return podnet.Net{}, fmt.Errorf("cni: %s: refused by the node", why)
		}
	}
	list, err := NetworkList(m.cfg.ConfDir)
	if err != nil {
		return podnet.Net{}, err
	}
	if err := m.Teardown(ctx, id); err != nil { // leftovers of a half-made pod
		return podnet.Net{}, err
	}
	defer func() {
		if err != nil {
			if terr := m.Teardown(context.WithoutCancel(ctx), id); terr != nil {
				m.log.Warn("rolling back pod network", "id", id, "err", terr)
			}
		}
	}()
	if err := podnet.CreateNetns(m.netnsPath(id)); err != nil {
		return podnet.Net{}, fmt.Errorf("cni: creating netns of %s: %w", id, err)
	}
	pm := portMappings(ports)
	// Recorded before ADD: a riklet killed during it still runs DEL.
	if err := m.save(id, record{Network: list.Name, Ports: pm}); err != nil {
		return podnet.Net{}, err
	}
	res, err := m.cfg.Plugins.AddNetworkList(ctx, list, m.runtimeConf(id, pm))
	if err != nil {
		return podnet.Net{}, fmt.Errorf("cni: ADD %s for %s: %w", list.Name, id, err)
	}
	rec, err := recordOf(list.Name, res)
	if err != nil {
		return podnet.Net{}, fmt.Errorf("cni: ADD %s for %s: %w", list.Name, id, err)
	}
	rec.Ports = pm
	if err := m.save(id, rec); err != nil {
		return podnet.Net{}, err
	}
	m.mu.Lock()
	m.checked[id] = true
	m.mu.Unlock()
	m.log.Info("pod network up (CNI)", "id", id, "network", list.Name, "ip", rec.IP)
	return m.netOf(id, rec), nil
}

// portMappings converts the pod's node ports for portmap.
func portMappings(ports []workload.PortMapping) []portMapping {
	var out []portMapping
	for _, p := range ports {
		if p.Port == 0 {
			continue
		}
		target := p.TargetPort
		if target == 0 {
			target = p.Port
		}
		proto := strings.ToLower(p.Protocol)
		if proto == "" {
			proto = "tcp"
		}
		out = append(out, portMapping{HostPort: p.Port, ContainerPort: target, Protocol: proto})
	}
	return out
}

// recordOf reads the pod's IPv4 address and gateway from an ADD result.
func recordOf(network string, res types.Result) (record, error) {
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return record{}, fmt.Errorf("reading the result: %w", err)
	}
	for _, ip := range r.IPs {
		a, ok := netip.AddrFromSlice(ip.Address.IP.To4())
		if !ok {
			continue
		}
		rec := record{Network: network, IP: a}
		if gw, ok := netip.AddrFromSlice(ip.Gateway.To4()); ok {
			rec.Gateway = gw
		}
		return rec, nil
	}
	return record{}, errors.New("the result has no IPv4 address")
}

func (m *Manager) netOf(id string, rec record) podnet.Net {
	return podnet.Net{NetnsPath: m.netnsPath(id), IP: rec.IP, Gateway: rec.Gateway}
}

func (m *Manager) save(id string, rec record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("cni: %w", err)
	}
	if err := os.WriteFile(m.recordPath(id), b, 0o600); err != nil {
		return fmt.Errorf("cni: recording the network of %s: %w", id, err)
	}
	return nil
}

func (m *Manager) load(id string) (record, bool) {
	b, err := os.ReadFile(m.recordPath(id))
	if err != nil {
		return record{}, false
	}
	var rec record
	if json.Unmarshal(b, &rec) != nil || rec.Network == "" {
		return record{}, false
	}
	return rec, true
}

// lookup returns pod id's network if its record and netns exist.
func (m *Manager) lookup(id string) (podnet.Net, bool) {
	rec, ok := m.load(id)
	if !ok || !rec.IP.IsValid() || !podnet.IsNetns(m.netnsPath(id)) {
		return podnet.Net{}, false
	}
	return m.netOf(id, rec), true
}

// Get returns pod id's network. The first time after a start (a riklet
// adopting the pod) it runs CHECK: a network the plugins find broken is
// reported missing.
func (m *Manager) Get(id string) (podnet.Net, bool) {
	if validID(id) != nil {
		return podnet.Net{}, false
	}
	n, ok := m.lookup(id)
	if !ok {
		return n, false
	}
	m.mu.Lock()
	checked := m.checked[id]
	m.mu.Unlock()
	if checked {
		return n, true
	}
	if err := m.Check(id); err != nil {
		m.log.Warn("pod network failed its CNI CHECK", "id", id, "err", err)
		return podnet.Net{}, false
	}
	m.mu.Lock()
	m.checked[id] = true
	m.mu.Unlock()
	m.log.Info("pod network passed its CNI CHECK", "id", id, "ip", n.IP)
	return n, true
}

// Check runs CHECK with the configuration and arguments pod id was added
// with (a bridge-mode Function's, whose namespace bridgenet plumbed, runs
// it through bridgenet.WithAddress).
func (m *Manager) Check(id string) error {
	if err := validID(id); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	list, rt, err := m.cached(id)
	if err != nil {
		return err
	}
	return m.cfg.Plugins.CheckNetworkList(ctx, checkable(list), rt)
}

// uncheckable are plugins whose CHECK is wrong in the plugin releases
// rik is tested with: portmap up to v1.2 always checks IPv6 rules, and
// fails for a pod with only an IPv4 address (containernetworking/plugins
// issue 819; Debian 12 ships v1.1.1). Their rules live in the node's
// tables, untouched by a riklet restart.
var uncheckable = map[string]bool{"portmap": true}

// checkable is list without the uncheckable plugins.
func checkable(list *libcni.NetworkConfigList) *libcni.NetworkConfigList {
	out := *list
	out.Plugins = nil
	for _, p := range list.Plugins {
		if p.Network == nil || !uncheckable[p.Network.Type] {
			out.Plugins = append(out.Plugins, p)
		}
	}
	return &out
}

// cached returns the configuration list and runtime configuration of pod
// id's ADD, from libcni's cache.
func (m *Manager) cached(id string) (*libcni.NetworkConfigList, *libcni.RuntimeConf, error) {
	rec, ok := m.load(id)
	if !ok {
		return nil, nil, fmt.Errorf("cni: no record of %s", id)
	}
	rt := m.runtimeConf(id, rec.Ports)
	b, cachedRT, err := m.cfg.Plugins.GetNetworkListCachedConfig(&libcni.NetworkConfigList{Name: rec.Network}, rt)
	if err != nil || b == nil {
		return nil, nil, fmt.Errorf("cni: no cached configuration of %s in network %s: %v", id, rec.Network, err)
	}
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		return nil, nil, fmt.Errorf("cni: cached configuration of %s: %w", id, err)
	}
	if cachedRT != nil {
		rt = cachedRT
	}
	return list, rt, nil
}

// Teardown runs DEL for pod id (with the configuration it was added with)
// and removes its netns and record. Missing pieces are fine; the record
// is kept when DEL fails, so that a later Teardown tries again.
func (m *Manager) Teardown(ctx context.Context, id string) error {
	if err := validID(id); err != nil {
		return err
	}
	if rec, ok := m.load(id); ok {
		list, rt, err := m.cached(id)
		if err != nil { // killed during ADD, or the cache is lost: today's configuration
			if list, err = NetworkList(m.cfg.ConfDir); err != nil {
				return err
			}
			rt = m.runtimeConf(id, rec.Ports)
		}
		if err := m.cfg.Plugins.DelNetworkList(ctx, list, rt); err != nil {
			return fmt.Errorf("cni: DEL %s for %s: %w", list.Name, id, err)
		}
	}
	if err := podnet.RemoveNetns(m.netnsPath(id)); err != nil {
		return fmt.Errorf("cni: %w", err)
	}
	if err := os.Remove(m.recordPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cni: %w", err)
	}
	m.mu.Lock()
	delete(m.checked, id)
	m.mu.Unlock()
	return nil
}

// Owners returns the ids holding a netns or a record.
func (m *Manager) Owners() ([]string, error) {
	set := map[string]bool{}
	for _, d := range []string{"netns", "pods"} {
		ents, err := os.ReadDir(filepath.Join(m.cfg.StateDir, d))
		if err != nil {
			return nil, fmt.Errorf("cni: %w", err)
		}
		for _, e := range ents {
			set[strings.TrimSuffix(e.Name(), ".json")] = true
		}
	}
	out := make([]string, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	sort.Strings(out)
	return out, nil
}
