package workload

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// MinHostPort is the lowest host port a workload may expose: the ports
// below are the system's (sshd, DNS, HTTP...).
const MinHostPort = 1024

// RikPorts are the ports rik's own components listen on by default
// (workers 4995, controllers 4996, API 5000): never a workload's host port.
var RikPorts = []int{4995, 4996, 5000}

// DefaultReservedPorts are the host ports reserved when a cluster or a
// node configures none: sshd's.
var DefaultReservedPorts = []int{22}

// Policy is what a cluster admits beyond what Validate checks: the same
// definition may be fine on one cluster and refused on another.
type Policy struct {
	// ReservedPorts are host ports refused besides those below MinHostPort
	// and RikPorts: the ports the cluster's own services use.
	ReservedPorts []int
	// RootfsDirs are the directories a file:// rootfs may be under.
	RootfsDirs []string
	// DefaultCPU (millicores) and DefaultMemory (MiB) are given to a
	// container that asks for none, so it is limited and counted by
	// placement; 0 leaves it unset.
	DefaultCPU    int
	DefaultMemory int
}

// DefaultPolicy is the policy of a cluster that sets nothing.
func DefaultPolicy() Policy {
	return Policy{
		ReservedPorts: slices.Clone(DefaultReservedPorts),
		RootfsDirs:    []string{DefaultRootfsDir},
		DefaultCPU:    100,
		DefaultMemory: 128,
	}
}

// Admit applies p to a valid definition (from Parse): it returns the
// definition as it is to be stored, with the default resources filled in,
// or a *ValidationError (wrapping ErrInvalid) listing, with field paths,
// every host port p refuses, a file:// rootfs outside p's directories and
// an http(s) rootfs at a link-local or cloud metadata address. w is not
// modified.
func Admit(w Workload, p Policy) (Workload, error) {
	v := &validator{}
	w.Spec.Containers = slices.Clone(w.Spec.Containers)
	for i := range w.Spec.Containers {
		c := &w.Spec.Containers[i]
		path := fmt.Sprintf("spec.containers[%d]", i)
		v.admitPorts(path+".ports", c.Ports, p)
		c.Resources = defaultResources(c.Resources, p)
	}
	if f := w.Spec.Function; f != nil {
		v.admitPorts("spec.function.exposure", f.Exposure, p)
		v.admitRootfs("spec.function.execution.rootfs", f.Execution.Rootfs, p)
	}
	if len(v.errs) > 0 {
		return Workload{}, &ValidationError{Errors: v.errs}
	}
	return w, nil
}

// defaultResources returns r with p's defaults where r sets nothing (a
// new value: r may be shared with the caller's definition).
func defaultResources(r *Resources, p Policy) *Resources {
	var out Resources
	if r != nil {
		out = *r
	}
	if out.CPU == 0 {
		out.CPU = p.DefaultCPU
	}
	if out.Memory == 0 {
		out.Memory = p.DefaultMemory
	}
	if out == (Resources{}) {
		return r
	}
	return &out
}

// HostPortRefused says why p refuses port as a host port, or "".
func (p Policy) HostPortRefused(port int) string {
	switch {
	case port < MinHostPort:
		return fmt.Sprintf("host port %d is below %d (system ports)", port, MinHostPort)
	case slices.Contains(RikPorts, port):
		return fmt.Sprintf("host port %d is used by rik", port)
	case slices.Contains(p.ReservedPorts, port):
		return fmt.Sprintf("host port %d is reserved", port)
	}
	return ""
}

func (v *validator) admitPorts(path string, ports PortList, p Policy) {
	for i, pt := range ports {
		if pt.Port <= 0 {
			continue // not exposed on the node
		}
		if why := p.HostPortRefused(pt.Port); why != "" {
			v.add(fmt.Sprintf("%s[%d].port", path, i), "%s", why)
		}
	}
}

func (v *validator) admitRootfs(path, rootfs string, p Policy) {
	u, err := url.Parse(rootfs)
	if err != nil {
		v.add(path, "not a URL")
		return
	}
	switch strings.ToLower(u.Scheme) {
	case "file":
		file, ok := RootfsFilePath(rootfs)
		if !ok {
			v.add(path, "a file:// URL must name an absolute path on the node (file:///dir/file)")
			return
		}
		switch _, _, ok := FileUnder(file, p.RootfsDirs); {
		case ok:
		case len(p.RootfsDirs) == 0:
			v.add(path, "file:// is not allowed on this cluster")
		default:
			v.add(path, "file:// only under %s on this cluster", strings.Join(p.RootfsDirs, ", "))
		}
	case "http", "https":
		if why := RefusedFetchHost(u.Hostname()); why != "" {
			v.add(path, "%s is %s: not allowed", truncate(u.Hostname()), why)
		}
	}
}

// ParsePortList parses a setting listing ports: "22,2379, 8443" (empty:
// none).
func ParsePortList(s string) ([]int, error) {
	var ports []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%q is not a port (1-65535)", f)
		}
		if !slices.Contains(ports, n) {
			ports = append(ports, n)
		}
	}
	return ports, nil
}
