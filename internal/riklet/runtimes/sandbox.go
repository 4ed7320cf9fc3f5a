package runtimes

import (
	"flag"
	"fmt"
	"net"
	"path"
	"strconv"
	"strings"

	"github.com/rik-org/rik/internal/riklet/runtime/function"
)

// Sandbox is how a node confines its workloads (the flags of this file).
type Sandbox struct {
	// AllowPrivileged lets pods be privileged or add capabilities outside
	// Docker's default set (refused otherwise).
	AllowPrivileged bool
	// VMUIDs is the range ("first-last") of the uids (and gids) VMMs run
	// as, one per VM.
	VMUIDs string
	// ProtectedPorts are node ports pods and guests may not reach, on any
	// node address, besides rik's (4995, 4996, 5000) and etcd's.
	ProtectedPorts ports
}

// ports is a repeatable or comma-separated list of port numbers.
type ports []int

func (p *ports) String() string {
	s := make([]string, len(*p))
	for i, n := range *p {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func (p *ports) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %q: want 1-65535", v)
		}
		*p = append(*p, n)
	}
	return nil
}

func (s *Sandbox) registerFlags(fs *flag.FlagSet) {
	fs.BoolVar(&s.AllowPrivileged, "allow-privileged", false, "run pods that are privileged or add capabilities outside Docker's default set (refused by default)")
	fs.StringVar(&s.VMUIDs, "vm-uid-range", fmt.Sprintf("%d-%d", function.DefaultVMUIDFirst, function.DefaultVMUIDFirst+function.DefaultVMUIDCount-1),
		"uids (and gids) QEMU runs as, one per VM: first-last, unused by anything else on the node")
	fs.Var(&s.ProtectedPorts, "protected-ports", "node ports pods and guests may not reach on any node address, besides 2379, 2380, 4995, 4996 and 5000 (repeatable, comma-separated)")
}

// ProtectAddrs adds the ports of host:port addresses (the node's own rik
// services) to the protected ports.
func (s *Sandbox) ProtectAddrs(addrs ...string) {
	for _, a := range addrs {
		a = strings.TrimPrefix(strings.TrimPrefix(a, "http://"), "https://")
		if _, p, err := net.SplitHostPort(a); err == nil {
			_ = s.ProtectedPorts.Set(p)
		}
	}
}

// uidRange parses "first-last" (uids 1 to 2^32-2, first <= last).
func uidRange(s string) (first, count uint32, err error) {
	a, b, ok := strings.Cut(s, "-")
	f, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 32)
	l, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 32)
	switch {
	case !ok || err1 != nil || err2 != nil:
		return 0, 0, fmt.Errorf("--vm-uid-range %q: want first-last, like 2000000000-2000065535", s)
	case f == 0 || l < f || l > 1<<32-2:
		return 0, 0, fmt.Errorf("--vm-uid-range %q: want 0 < first <= last < 4294967295", s)
	}
	return uint32(f), uint32(l - f + 1), nil
}

func (s Sandbox) validate() error {
	_, _, err := uidRange(s.VMUIDs)
	return err
}

// functionCgroupDir is where VMs' cgroups live: beside the pods', in a
// directory no pod id can be named.
func functionCgroupDir(cgroupParent string) string {
	if strings.Trim(cgroupParent, "/") == "" {
		return function.DefaultCgroupDir
	}
	return path.Join(strings.Trim(cgroupParent, "/"), "_functions")
}

// functionSandbox fills the sandbox fields of a function.Config.
func (s Sandbox) functionSandbox(c *function.Config, cgroupParent string) error {
	first, count, err := uidRange(s.VMUIDs)
	if err != nil {
		return err
	}
	c.VMUIDFirst, c.VMUIDCount, c.CgroupDir = first, count, functionCgroupDir(cgroupParent)
	return nil
}
