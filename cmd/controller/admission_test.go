package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rik-org/rik/internal/controller"
	"github.com/rik-org/rik/internal/workload"
)

func TestAdmissionFlags(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		want    controller.Admission
		wantErr string
	}{
		{name: "defaults", want: controller.DefaultAdmission()},
		{
			name: "environment",
			env: map[string]string{"RIK_ROOTFS_DIRS": "/srv/a, /srv/b/", "RIK_RESERVED_PORTS": "22,2379", "RIK_DEFAULT_CPU": "250",
				"RIK_DEFAULT_MEMORY": "64", "RIK_MAX_INSTANCES": "50", "RIK_MAX_PENDING": "0"},
			want: controller.Admission{MaxInstances: 50, Policy: workload.Policy{
				RootfsDirs: []string{"/srv/a", "/srv/b"}, ReservedPorts: []int{22, 2379}, DefaultCPU: 250, DefaultMemory: 64}},
		},
		{
			name: "flags override the environment",
			env:  map[string]string{"RIK_ROOTFS_DIRS": "/srv/a", "RIK_MAX_PENDING": "5"},
			args: []string{"--rootfs-dir", "/x", "--rootfs-dir", "/y,/z", "--reserved-ports", "", "--max-pending", "7", "--default-cpu", "0"},
			want: controller.Admission{MaxInstances: controller.DefaultMaxInstances, MaxPending: 7, Policy: workload.Policy{
				RootfsDirs: []string{"/x", "/y", "/z"}, DefaultMemory: 128}},
		},
		{name: "relative dir", args: []string{"--rootfs-dir", "rootfs"}, wantErr: `--rootfs-dir "rootfs": want an absolute path`},
		{name: "bad port", args: []string{"--reserved-ports", "22,ssh"}, wantErr: `--reserved-ports: "ssh" is not a port`},
		{name: "negative cap", args: []string{"--max-instances", "-1"}, wantErr: "--max-instances -1"},
		{name: "huge default", args: []string{"--default-memory", "99999999999"}, wantErr: "--default-memory"},
		{name: "bad environment", env: map[string]string{"RIK_MAX_PENDING": "many"}, wantErr: `RIK_MAX_PENDING="many"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseArgs(append([]string{"--insecure"}, tt.args...), tt.env)
			if err == nil && tt.wantErr == "" {
				if d := cmp.Diff(tt.want, o.admission); d != "" {
					t.Errorf("admission (-want +got):\n%s", d)
				}
				return
			}
			if tt.wantErr == "" || err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
