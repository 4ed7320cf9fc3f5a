package main

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseCmdline(t *testing.T) {
	def := bootConfig{Root: "/dev/vda", FSType: "ext4", Init: "/sbin/init"}
	tests := []struct {
		name    string
		in      string
		want    bootConfig
		wantErr bool
	}{
		{name: "empty", in: "", want: def},
		{name: "other params ignored", in: "console=ttyS0 quiet rik.unknown=1 rik.noequals", want: def},
		{
			name: "full",
			in:   "console=ttyS0 rik.ip=10.62.0.1/30 rik.gw=10.62.0.2 rik.dns=1.1.1.1,8.8.8.8 rik.root=/dev/vdb rik.rootfstype=ext2 rik.init=/bin/httpd rik.args=-f,-p,80 rik.hostname=fn-abc12",
			want: bootConfig{
				IP:       netip.MustParsePrefix("10.62.0.1/30"),
				GW:       netip.MustParseAddr("10.62.0.2"),
				DNS:      []netip.Addr{netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("8.8.8.8")},
				Root:     "/dev/vdb",
				FSType:   "ext2",
				Init:     "/bin/httpd",
				Args:     []string{"-f", "-p", "80"},
				Hostname: "fn-abc12",
			},
		},
		{name: "halt reboot", in: "rik.halt=reboot", want: bootConfig{Root: "/dev/vda", FSType: "ext4", Init: "/sbin/init", Reboot: true}},
		{name: "halt poweroff", in: "rik.halt=reboot rik.halt=poweroff", want: def},
		{name: "bad halt", in: "rik.halt=explode", wantErr: true},
		{name: "bad ip", in: "rik.ip=10.62.0.1", wantErr: true},
		{name: "ipv6 ip", in: "rik.ip=fd00::1/64", wantErr: true},
		{name: "bad gw", in: "rik.ip=10.62.0.1/30 rik.gw=x", wantErr: true},
		{name: "gw outside subnet", in: "rik.ip=10.62.0.1/30 rik.gw=10.62.0.9", wantErr: true},
		{name: "gw without ip", in: "rik.gw=10.62.0.2", wantErr: true},
		{name: "bad dns", in: "rik.dns=1.1.1.1,nope", wantErr: true},
		{name: "relative init", in: "rik.init=sbin/init", wantErr: true},
		{name: "root not dev", in: "rik.root=/etc/passwd", wantErr: true},
		{name: "empty fstype", in: "rik.rootfstype=", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCmdline(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parseCmdline(%q) = %+v, want error", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseCmdline(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("parseCmdline(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	tests := []struct {
		exited   bool
		code     int
		signaled bool
		sig      int
		want     int
	}{
		{true, 0, false, 0, 0},
		{true, 3, false, 0, 3},
		{false, 0, true, 9, 137},
		{false, 0, true, 15, 143},
		{false, 0, false, 0, 255},
	}
	for _, tt := range tests {
		if got := exitCode(tt.exited, tt.code, tt.signaled, tt.sig); got != tt.want {
			t.Errorf("exitCode(%v,%d,%v,%d) = %d, want %d", tt.exited, tt.code, tt.signaled, tt.sig, got, tt.want)
		}
	}
}
