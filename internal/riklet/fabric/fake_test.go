package fabric

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
)

// fakeHost is a stateful Host: routes, a VXLAN device and its entries.
type fakeHost struct {
	nets    []netip.Prefix
	routes  map[netip.Prefix]Route
	vxlan   *fakeVXLAN
	tunnels map[string]Tunnel // by MAC
	calls   int               // changes made
	failAdd error             // returned by AddRoute when set
}

type fakeVXLAN struct {
	local, vtep netip.Addr
	mac         string
}

func newFakeHost(nets ...netip.Prefix) *fakeHost {
	return &fakeHost{nets: nets, routes: map[netip.Prefix]Route{}, tunnels: map[string]Tunnel{}}
}

func (f *fakeHost) Nets() ([]netip.Prefix, error) { return slices.Clone(f.nets), nil }

func (f *fakeHost) Routes() ([]Route, error) {
	return slices.Collect(maps.Values(f.routes)), nil
}

func (f *fakeHost) AddRoute(r Route) error {
	if f.failAdd != nil {
		return f.failAdd
	}
	if _, ok := f.routes[r.Dst]; ok {
		return fmt.Errorf("route to %s: exists", r.Dst)
	}
	if r.VXLAN && f.vxlan == nil {
		return errors.New("no vxlan device")
	}
	f.calls++
	f.routes[r.Dst] = r
	return nil
}

func (f *fakeHost) DelRoute(r Route) error {
	if cur, ok := f.routes[r.Dst]; ok && cur == r {
		f.calls++
		delete(f.routes, r.Dst)
	}
	return nil
}

func (f *fakeHost) EnsureVXLAN(local, vtep netip.Addr, mac string) error {
	want := &fakeVXLAN{local, vtep, mac}
	if f.vxlan == nil || *f.vxlan != *want {
		f.calls++
		if f.vxlan != nil { // recreated: its entries and routes go with it
			f.dropVXLAN()
		}
		f.vxlan = want
	}
	return nil
}

func (f *fakeHost) dropVXLAN() {
	f.vxlan = nil
	clear(f.tunnels)
	maps.DeleteFunc(f.routes, func(_ netip.Prefix, r Route) bool { return r.VXLAN })
}

func (f *fakeHost) DelVXLAN() error {
	if f.vxlan != nil {
		f.calls++
		f.dropVXLAN()
	}
	return nil
}

func (f *fakeHost) Tunnels() ([]Tunnel, error) { return slices.Collect(maps.Values(f.tunnels)), nil }

func (f *fakeHost) AddTunnel(t Tunnel) error {
	if f.vxlan == nil {
		return errors.New("no vxlan device")
	}
	f.calls++
	f.tunnels[t.MAC] = t
	return nil
}

func (f *fakeHost) DelTunnel(t Tunnel) error {
	if _, ok := f.tunnels[t.MAC]; ok {
		f.calls++
		delete(f.tunnels, t.MAC)
	}
	return nil
}
