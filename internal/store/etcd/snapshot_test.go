package etcd

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"

	"github.com/rik-org/rik/internal/store/etcd/etcdtest"
)

// A snapshot restores, with etcdutl's restore, into a member that serves
// the keys rik wrote.
func TestSnapshotRestores(t *testing.T) {
	ctx := context.Background()
	endpoint := etcdtest.Start(t)
	s := open(t, endpoint)
	t.Cleanup(func() { s.Close() })
	want := map[string]string{
		"/workload/pods/default/web":      `{"name":"web"}`,
		"/instance/pods/default/web-1abc": `{"status":"RUNNING"}`,
		"/node/n1":                        "n1",
	}
	for k, v := range want {
		if _, err := s.Put(ctx, k, []byte(v), 0); err != nil {
			t.Fatal(err)
		}
	}

	var buf bytes.Buffer
	n, err := Snapshot(ctx, endpoint, &buf)
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if n != int64(buf.Len()) || n == 0 {
		t.Fatalf("Snapshot returned %d, wrote %d bytes", n, buf.Len())
	}
	// Written after the snapshot: not in the restored member.
	if _, err := s.Put(ctx, "/node/late", nil, 0); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "snap.db")
	if err := os.WriteFile(file, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	// `etcdutl snapshot restore snap.db --name rik-test --data-dir DIR
	//  --initial-cluster rik-test=http://ADDR --initial-advertise-peer-urls http://ADDR`
	peer := freeAddr(t)
	dataDir := filepath.Join(t.TempDir(), "restored")
	err = snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath:        file,
		Name:                etcdtest.Name,
		OutputDataDir:       dataDir,
		PeerURLs:            []string{"http://" + peer},
		InitialCluster:      etcdtest.Name + "=http://" + peer,
		InitialClusterToken: "etcd-cluster",
	})
	if err != nil {
		t.Fatalf("restoring the snapshot: %v", err)
	}
	restored := open(t, etcdtest.StartIn(t, dataDir, etcdtest.Name, peer))
	t.Cleanup(func() { restored.Close() })
	got, err := restored.List(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("restored member holds %d keys, want %d: %+v", len(got), len(want), got)
	}
	for _, kv := range got {
		if want[kv.Key] != string(kv.Value) {
			t.Errorf("restored %s = %q, want %q", kv.Key, kv.Value, want[kv.Key])
		}
	}
}

func TestSnapshotUnreachable(t *testing.T) {
	var buf bytes.Buffer
	_, err := Snapshot(context.Background(), freeAddr(t), &buf)
	if err == nil || !strings.Contains(err.Error(), "etcd") || buf.Len() != 0 {
		t.Errorf("Snapshot of nothing: %v (%d bytes)", err, buf.Len())
	}
}

// freeAddr returns a 127.0.0.1 address no one listens on (just now).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
