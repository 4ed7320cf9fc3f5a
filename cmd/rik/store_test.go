package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rik-org/rik/internal/store/bolt"
)

// rikRun runs rik with args and returns its exit code and output.
func rikRun(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestStoreBackupRestore(t *testing.T) {
	t.Setenv("RIK_STORE", "")
	data := t.TempDir()
	s, err := bolt.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(context.Background(), "/node/n1", []byte("n1"), 0); err != nil {
		t.Fatal(err)
	}
	// The controller runs: the copy is refused, saying why.
	out := filepath.Join(t.TempDir(), "rik-backup.db")
	code, _, stderr := rikRun("store", "backup", "--data-dir", data, "--out", out)
	if code != 1 || !strings.Contains(stderr, "stop it for the copy") {
		t.Errorf("backup of a running controller's store: exit %d, %q", code, stderr)
	}
	s.Close()
	code, stdout, stderr := rikRun("store", "backup", "--data-dir", data, "--out", out)
	if code != 0 || !strings.Contains(stdout, "bytes written to "+out) {
		t.Fatalf("backup: exit %d, %q %q", code, stdout, stderr)
	}
	code, _, stderr = rikRun("store", "restore", "--data-dir", data, "--from", out)
	if code != 1 || !strings.Contains(stderr, "pass --force") {
		t.Errorf("restore over a store without --force: exit %d, %q", code, stderr)
	}
	dst := filepath.Join(t.TempDir(), "data")
	t.Setenv("DATABASE_LOCATION", dst) // the controller's setting is the default
	code, stdout, stderr = rikRun("store", "restore", "--from", out)
	if code != 0 || !strings.Contains(stdout, "restored "+filepath.Join(dst, "rik.db")) {
		t.Fatalf("restore: exit %d, %q %q", code, stdout, stderr)
	}
	r, err := bolt.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if kv, err := r.Get(context.Background(), "/node/n1"); err != nil || string(kv.Value) != "n1" {
		t.Errorf("restored /node/n1: %+v, %v", kv, err)
	}
}

func TestStoreBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"store"}, 2, "usage: rik store"},
		{[]string{"store", "nope"}, 2, "unknown command"},
		{[]string{"store", "backup"}, 2, "--out: required"},
		{[]string{"store", "backup", "--out", "x", "--store", "mysql://h"}, 2, "want \"bolt\" or etcd://"},
		{[]string{"store", "restore"}, 2, "--from: required"},
		{[]string{"store", "restore", "--from", "snap.db", "--store", "etcd://127.0.0.1:2379"}, 2, "etcdutl snapshot restore snap.db"},
		{[]string{"store", "backup", "--out", filepath.Join(t.TempDir(), "b"), "--data-dir", t.TempDir()}, 1, "no such file"},
	} {
		code, _, stderr := rikRun(tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("rik %s: exit %d, %q; want %d with %q", strings.Join(tc.args, " "), code, stderr, tc.code, tc.want)
		}
	}
}
