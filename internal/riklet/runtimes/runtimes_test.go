package runtimes

import (
	"flag"
	"io"
	"testing"
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
		"":                                 true,
		"--vmm=qemu":                       true,
		"--pod-cidr=10.0.0.0/24":           true,
		"--pod-cidr=nope":                  false,
		"--function-cidr=10.62.0.0":        false,
		"--pod-cidr=fd00::/64":             false,
		"--function-cidr=10.63.1.0/24":     false, // inside the default pod CIDR
		"--vmm=kvm":                        false,
		"--cgroup-parent=../../sys/fs":     false,
		"--cgroup-parent=rik-e2e-1/pods":   true,
		"--function-cidr=192.168.100.0/22": true,
	} {
		var c Config
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		c.RegisterFlags(fs)
		var argv []string
		if args != "" {
			argv = []string{args}
		}
		if err := fs.Parse(argv); err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); (err == nil) != ok {
			t.Errorf("Validate(%s) = %v, want ok=%v", args, err, ok)
		}
	}
}
