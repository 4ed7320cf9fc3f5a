package runtimes

import (
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/rik-org/rik/internal/riklet/runtime/function"
)

func TestCheckCgroupParent(t *testing.T) {
	for p, ok := range map[string]bool{
		"":                 true,
		"rik/pods":         true,
		"/rik-e2e-1/pods/": true,
		"rik/../etc":       false,
		"rik//pods":        false,
		"rik pods":         false,
		"./rik":            false,
	} {
		if err := checkCgroupParent(p); (err == nil) != ok {
			t.Errorf("checkCgroupParent(%q) = %v, want ok=%v", p, err, ok)
		}
	}
}

func TestValidate(t *testing.T) {
	for args, ok := range map[string]bool{
		"":                                          true,
		"--vmm=qemu":                                true,
		"--pod-cidr=10.0.0.0/24":                    true,
		"--pod-cidr=nope":                           false,
		"--function-cidr=10.62.0.0":                 false,
		"--pod-cidr=fd00::/64":                      false,
		"--function-cidr=10.63.1.0/24":              false, // inside the default pod CIDR
		"--vmm=kvm":                                 false,
		"--cgroup-parent=../../sys/fs":              false,
		"--cgroup-parent=rik-e2e-1/pods":            true,
		"--function-cidr=192.168.100.0/22":          true,
		"--vm-uid-range=100000-165535":              true,
		"--vm-uid-range=5-5":                        true,
		"--vm-uid-range=0-10":                       false,
		"--vm-uid-range=10-5":                       false,
		"--vm-uid-range=100000":                     false,
		"--vm-uid-range=1-4294967295":               false,
		"--allow-privileged":                        true,
		"--protected-ports=22,8443":                 true,
		"--pod-cidr=auto":                           true,
		"--fabric=vxlan":                            true,
		"--fabric=host-gw":                          false,
		"--node-ip=192.168.1.10":                    true,
		"--node-ip=fd00::1":                         false,
		"--node-ip=node1":                           false,
		"--function-network=bridge":                 true,
		"--function-network=nat":                    true,
		"--function-network=host":                   false,
		"--function-network=bridge --pod-cidr=auto": true,
		"--function-network=bridge --network=cni":   true,
	} {
		var c Config
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		c.RegisterFlags(fs)
		var argv []string
		if args != "" {
			argv = strings.Fields(args)
		}
		if err := fs.Parse(argv); err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); (err == nil) != ok {
			t.Errorf("Validate(%s) = %v, want ok=%v", args, err, ok)
		}
	}
}

func TestSandboxFlags(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.RegisterFlags(fs)
	if err := fs.Parse([]string{"--protected-ports", "22, 8443", "--protected-ports=9000", "--allow-privileged"}); err != nil {
		t.Fatal(err)
	}
	c.ProtectAddrs("127.0.0.1:5001", "http://10.0.0.1:4999", "no-port", "[::1]:6000")
	if got := c.ProtectedPorts.String(); got != "22,8443,9000,5001,4999,6000" || !c.AllowPrivileged {
		t.Errorf("protected ports %s, allow privileged %v", got, c.AllowPrivileged)
	}
	for _, bad := range []string{"--protected-ports=0", "--protected-ports=65536", "--protected-ports=ssh"} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var c Config
		c.RegisterFlags(fs)
		if err := fs.Parse([]string{bad}); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	// Defaults: no privileged pods, 65536 VM uids, functions' cgroups
	// beside the pods'.
	var d Config
	fs = flag.NewFlagSet("t", flag.ContinueOnError)
	d.RegisterFlags(fs)
	fs.Parse(nil)
	var fc function.Config
	if err := d.functionSandbox(&fc, d.CgroupParent); err != nil || d.AllowPrivileged ||
		fc.VMUIDFirst != function.DefaultVMUIDFirst || fc.VMUIDCount != function.DefaultVMUIDCount || fc.CgroupDir != "rik/pods/_functions" {
		t.Errorf("defaults: %+v, %v", fc, err)
	}
	for parent, want := range map[string]string{"": "rik/functions", "/rik-e2e-1/": "rik-e2e-1/_functions"} {
		if got := functionCgroupDir(parent); got != want {
			t.Errorf("functionCgroupDir(%q) = %q, want %q", parent, got, want)
		}
	}
}

func TestFirewallFlag(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
		err  string
	}{
		{args: nil, want: "auto"},
		{args: []string{"--firewall", "nftables"}, want: "nftables"},
		{args: []string{"--firewall", "iptables"}, want: "iptables"},
		{args: []string{"--firewall", "ipchains"}, err: `--firewall "ipchains": want auto, nftables or iptables`},
	} {
		c := Config{PodCIDR: "10.63.0.0/16", FunctionCIDR: "10.62.0.0/16", Sandbox: Sandbox{VMUIDs: "2000000000-2000000009"}}
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		c.RegisterFlags(fs)
		if err := fs.Parse(tt.args); err != nil {
			t.Fatal(err)
		}
		err := c.Validate()
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("%v: Validate = %v, want %q", tt.args, err, tt.err)
			}
			continue
		}
		if err != nil || c.Firewall != tt.want {
			t.Errorf("%v: Firewall %q, Validate %v; want %q", tt.args, c.Firewall, err, tt.want)
		}
	}
}
