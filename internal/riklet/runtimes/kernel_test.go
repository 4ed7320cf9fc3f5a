package runtimes

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestResolveKernel(t *testing.T) {
	fsys := fstest.MapFS{
		"k/boot/vmlinuz-6.1":        {Data: []byte("k")},
		"k/lib/modules/6.1/mod.dep": {Data: []byte("m")},
	}
	for _, tc := range []struct {
		in          Config
		dirs        []string
		path, mods  string
		msgContains string
	}{
		{Config{KernelPath: "auto"}, []string{"/k"}, "/k/boot/vmlinuz-6.1", "/k/lib/modules/6.1", "guest kernel /k/boot/vmlinuz-6.1"},
		{Config{KernelPath: "auto", KernelModules: "/mine"}, []string{"/k"}, "/k/boot/vmlinuz-6.1", "/mine", "modules /mine"},
		{Config{KernelPath: "auto"}, []string{"/none"}, "", "", "no guest kernel in /none"},
		{Config{KernelPath: "/boot/vmlinuz"}, []string{"/k"}, "/boot/vmlinuz", "", ""},
		{Config{}, []string{"/k"}, "", "", ""},
	} {
		c := tc.in
		msg := c.ResolveKernel(fsys, tc.dirs)
		if c.KernelPath != tc.path || c.KernelModules != tc.mods {
			t.Errorf("%+v: kernel %q modules %q, want %q %q", tc.in, c.KernelPath, c.KernelModules, tc.path, tc.mods)
		}
		if (tc.msgContains == "") != (msg == "") || !strings.Contains(msg, tc.msgContains) {
			t.Errorf("%+v: message %q, want one containing %q", tc.in, msg, tc.msgContains)
		}
	}
}
