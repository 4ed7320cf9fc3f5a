package vmm

import (
	"io/fs"
	"testing"
	"testing/fstest"
)

func TestFindKernel(t *testing.T) {
	file := &fstest.MapFile{Data: []byte("kernel")}
	dir := &fstest.MapFile{Mode: fs.ModeDir | 0o755}
	fsys := fstest.MapFS{
		// /var/cache/rik/kernel: two versions, modules only for one.
		"var/cache/rik/kernel/boot/vmlinuz-6.1.0-9-cloud-amd64":               file,
		"var/cache/rik/kernel/boot/vmlinuz-6.1.0-10-cloud-amd64":              file,
		"var/cache/rik/kernel/boot/config-6.1.0-10-cloud-amd64":               file,
		"var/cache/rik/kernel/lib/modules/6.1.0-10-cloud-amd64/modules.dep":   file,
		"var/cache/rik/kernel/lib/modules/6.1.0-9-cloud-amd64/modules.dep":    file,
		"var/cache/rik-test/kernel/boot/vmlinuz-6.12.1+deb12-cloud-amd64":     file,
		"var/cache/rik-test/kernel/lib/modules/6.12.1+deb12-cloud-amd64/x.ko": file,
		// A kernel without modules, and a directory named like a kernel.
		"srv/k/boot/vmlinuz-7.0": file,
		"srv/d/boot/vmlinuz-8.0": dir,
	}
	for _, tc := range []struct {
		dirs []string
		want GuestKernel
		ok   bool
	}{
		{DefaultKernelDirs, GuestKernel{
			"/var/cache/rik/kernel/boot/vmlinuz-6.1.0-10-cloud-amd64",
			"/var/cache/rik/kernel/lib/modules/6.1.0-10-cloud-amd64"}, true},
		{[]string{"/nowhere", "/var/cache/rik-test/kernel/"}, GuestKernel{
			"/var/cache/rik-test/kernel/boot/vmlinuz-6.12.1+deb12-cloud-amd64",
			"/var/cache/rik-test/kernel/lib/modules/6.12.1+deb12-cloud-amd64"}, true},
		{[]string{"/srv/k"}, GuestKernel{"/srv/k/boot/vmlinuz-7.0", ""}, true},
		{[]string{"/srv/d"}, GuestKernel{}, false},
		{[]string{"/nowhere"}, GuestKernel{}, false},
		{nil, GuestKernel{}, false},
	} {
		got, ok := FindKernel(fsys, tc.dirs)
		if got != tc.want || ok != tc.ok {
			t.Errorf("FindKernel(%v) = %+v, %v; want %+v, %v", tc.dirs, got, ok, tc.want, tc.ok)
		}
	}
}

func TestVersionLess(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"6.1.0-9-cloud-amd64", "6.1.0-10-cloud-amd64", true},
		{"6.1.0-10-cloud-amd64", "6.1.0-9-cloud-amd64", false},
		{"6.1.0", "6.12.0", true},
		{"6.12.118+deb12", "6.1.0-30", false},
		{"6.1", "6.1.0", true},
		{"6.1.0", "6.1.0", false},
		{"6.01", "6.1", false},
		{"6.1-a", "6.1-b", true},
	} {
		if got := versionLess(tc.a, tc.b); got != tc.want {
			t.Errorf("versionLess(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
