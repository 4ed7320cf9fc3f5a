package backend

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rik-org/rik/internal/store/bolt"
	"github.com/rik-org/rik/internal/store/etcd"
	"github.com/rik-org/rik/internal/store/etcd/etcdtest"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    Choice
		wantErr string
	}{
		{in: "", want: Choice{Kind: Bolt}},
		{in: "bolt", want: Choice{Kind: Bolt}},
		{in: "etcd://etcd:2379", want: Choice{Kind: Etcd, Endpoints: []string{"etcd:2379"}}},
		{in: "etcd://10.0.0.1:2379,10.0.0.2:2379/", want: Choice{Kind: Etcd, Endpoints: []string{"10.0.0.1:2379", "10.0.0.2:2379"}}},
		{in: "etcd://[::1]:2379", want: Choice{Kind: Etcd, Endpoints: []string{"[::1]:2379"}}},
		{in: "etcd://", wantErr: "RIK_STORE"},
		{in: "etcd://host", wantErr: "RIK_STORE"},
		{in: "etcd://host:0", wantErr: "invalid port"},
		{in: "etcd://host:99999", wantErr: "invalid port"},
		{in: "etcd://host:x", wantErr: "invalid port"},
		{in: "etcd://:2379", wantErr: "invalid host"},
		{in: "etcd://a:1,", wantErr: "RIK_STORE"},
		{in: "etcd://u@h:1", wantErr: "invalid host"},
		{in: "redis://h:1", wantErr: "RIK_STORE"},
		{in: "Bolt", wantErr: "RIK_STORE"},
		{in: "/var/lib/rik", wantErr: "RIK_STORE"},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Parse(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("Parse(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestOpen(t *testing.T) {
	ctx := t.Context()
	s, err := Open(ctx, t.TempDir()+"/", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(*bolt.Store); !ok {
		t.Errorf("Open(dir, \"\") = %T, want *bolt.Store", s)
	}
	s.Close()

	s, err = Open(ctx, "/nonexistent-unused", "etcd://"+etcdtest.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(*etcd.Store); !ok {
		t.Errorf("Open(etcd) = %T, want *etcd.Store", s)
	}
	if _, err := s.Put(ctx, "/k", []byte("v"), 0); err != nil {
		t.Errorf("Put through etcd backend: %v", err)
	}
	s.Close()

	if _, err := Open(context.Background(), t.TempDir(), "mysql://x"); err == nil || !strings.Contains(err.Error(), "RIK_STORE") {
		t.Errorf("Open(mysql) error = %v, want one naming RIK_STORE", err)
	}
}
