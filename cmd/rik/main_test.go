package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/rik-org/rik/internal/riklet/runtimes"
)

// Bad flags are refused before anything starts (no port bound, no
// directory created).
func TestRunRejectsBadInput(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // were anything started, it would stop at once
	for _, args := range [][]string{
		{},
		{"nope"},
		{"dev", "extra"},
		{"dev", "--vmm", "kvm"},
		{"dev", "--pod-cidr", "10.63.0.0"},
		{"dev", "--cgroup-parent", "../etc"},
		{"dev", "--log-level", "loud"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(ctx, args, &stdout, &stderr); code != 2 {
			t.Errorf("rik %s: exit %d, want 2 (stderr %q)", strings.Join(args, " "), code, stderr.String())
		}
	}
	var stdout bytes.Buffer
	if code := run(context.Background(), []string{"version"}, &stdout, &bytes.Buffer{}); code != 0 || !strings.HasPrefix(stdout.String(), "rik ") {
		t.Errorf("rik version: exit %d, %q", code, stdout.String())
	}
}

func TestHostCleanup(t *testing.T) {
	for _, tc := range []struct {
		temporary bool
		rt        runtimes.Config
		want      bool
	}{
		{true, runtimes.Config{Pods: true}, true},
		{true, runtimes.Config{KernelPath: "/boot/vmlinuz"}, true},
		{true, runtimes.Config{}, false},            // not root: nothing offered, nothing programmed
		{false, runtimes.Config{Pods: true}, false}, // --data-dir: kept for the next run
		{false, runtimes.Config{KernelPath: "/k"}, false},
	} {
		if got := hostCleanup(tc.temporary, tc.rt) != nil; got != tc.want {
			t.Errorf("hostCleanup(%v, %+v) set = %v, want %v", tc.temporary, tc.rt, got, tc.want)
		}
	}
}

// rik dev's controller judges rootfs and host ports as its node does.
func TestDevAdmission(t *testing.T) {
	def := devAdmission(runtimes.Config{})
	if len(def.Policy.RootfsDirs) != 1 || def.Policy.RootfsDirs[0] != "/var/lib/rik/rootfs" || len(def.Policy.ReservedPorts) != 1 || def.MaxPending == 0 {
		t.Errorf("default = %+v", def)
	}
	a := devAdmission(runtimes.Config{RootfsDirs: []string{"/srv/r"}, ReservedPorts: []int{}})
	if len(a.Policy.RootfsDirs) != 1 || a.Policy.RootfsDirs[0] != "/srv/r" || len(a.Policy.ReservedPorts) != 0 {
		t.Errorf("with the node's settings = %+v", a)
	}
	for _, args := range [][]string{{"dev", "--rootfs-dir", "rel"}, {"dev", "--reserved-ports", "x"}} {
		var stderr bytes.Buffer
		if code := run(context.Background(), args, &bytes.Buffer{}, &stderr); code != 2 {
			t.Errorf("rik %s: exit %d, want 2 (stderr %q)", strings.Join(args, " "), code, stderr.String())
		}
	}
}
