package runtimes

import (
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestAdmissionFlags(t *testing.T) {
	tests := []struct {
		name       string
		preset     bool // AllowPrivateFetch before the flags are registered (rik dev)
		args       []string
		dirs       list
		private    bool
		ports      []int
		parseErr   string
		invalidErr string
	}{
		{name: "defaults"},
		{name: "rik dev's default", preset: true, private: true},
		{name: "rik dev, turned off", preset: true, args: []string{"--allow-private-fetch=false"}},
		{name: "dirs", args: []string{"--rootfs-dir", "/srv/a", "--rootfs-dir", "/srv/b,/srv/c"}, dirs: list{"/srv/a", "/srv/b", "/srv/c"}},
		{name: "relative dir", args: []string{"--rootfs-dir", "images"}, dirs: list{"images"}, invalidErr: `--rootfs-dir "images": want an absolute path`},
		{name: "ports", args: []string{"--reserved-ports", "22, 2222"}, ports: []int{22, 2222}},
		{name: "no reserved ports", args: []string{"--reserved-ports", ""}, ports: []int{}},
		{name: "bad port", args: []string{"--reserved-ports", "22,ssh"}, parseErr: `"ssh" is not a port`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{AllowPrivateFetch: tt.preset}
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			c.RegisterFlags(fs)
			err := fs.Parse(tt.args)
			if tt.parseErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.parseErr) {
					t.Errorf("Parse = %v, want %q", err, tt.parseErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Validate(); (err == nil) != (tt.invalidErr == "") || (err != nil && err.Error() != tt.invalidErr) {
				t.Errorf("Validate = %v, want %q", err, tt.invalidErr)
			}
			if d := cmp.Diff(tt.dirs, c.RootfsDirs); d != "" {
				t.Errorf("RootfsDirs (-want +got):\n%s", d)
			}
			if c.AllowPrivateFetch != tt.private {
				t.Errorf("AllowPrivateFetch = %v, want %v", c.AllowPrivateFetch, tt.private)
			}
			if d := cmp.Diff(tt.ports, c.ReservedPorts); d != "" || (tt.ports != nil) != (c.ReservedPorts != nil) {
				t.Errorf("ReservedPorts = %#v, want %#v", c.ReservedPorts, tt.ports)
			}
		})
	}
}
