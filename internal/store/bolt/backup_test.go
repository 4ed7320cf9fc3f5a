package bolt

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	bbolt "go.etcd.io/bbolt"

	"github.com/rik-org/rik/internal/testutil"
)

// fill opens a store in dir, writes kvs and closes it; it returns the
// revision of the last write.
func fill(t *testing.T, dir string, kvs ...string) int64 {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var rev int64
	for i := 0; i+1 < len(kvs); i += 2 {
		if rev, err = s.Put(context.Background(), kvs[i], []byte(kvs[i+1]), -1); err != nil {
			t.Fatal(err)
		}
	}
	return rev
}

// backupFile backs the store of dir up into a file and returns its path.
func backupFile(t *testing.T, dir string) string {
	t.Helper()
	var buf bytes.Buffer
	n, err := Backup(context.Background(), dir, &buf)
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if n != int64(buf.Len()) || n == 0 {
		t.Fatalf("Backup returned %d, wrote %d bytes", n, buf.Len())
	}
	path := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBackupRestoreRoundTrip(t *testing.T) {
	src := t.TempDir()
	rev := fill(t, src, "/workload/pods/default/web", `{"name":"web"}`, "/node/n1", "n1")
	backup := backupFile(t, src)
	if err := Verify(backup); err != nil {
		t.Fatalf("Verify(backup): %v", err)
	}

	dst := filepath.Join(t.TempDir(), "data") // created by Restore
	if err := Restore(dst, backup, false); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	s, err := Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	kv, err := s.Get(context.Background(), "/workload/pods/default/web")
	if err != nil || string(kv.Value) != `{"name":"web"}` {
		t.Fatalf("restored key: %+v, %v", kv, err)
	}
	// The revision counter came along: the next write follows the last.
	next, err := s.Put(context.Background(), "/node/n2", []byte("n2"), 0)
	if err != nil || next != rev+1 {
		t.Fatalf("next write: rev %d, %v; want %d", next, err, rev+1)
	}
	if _, err := os.Stat(filepath.Join(dst, FileName+PreRestoreSuffix)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a pre-restore copy exists though nothing was replaced: %v", err)
	}
}

// Restoring over a store needs force, keeps the replaced one, and keeps
// revisions growing although the backup is older.
func TestRestoreReplacesWithForce(t *testing.T) {
	dir := t.TempDir()
	fill(t, dir, "/node/old", "1")
	backup := backupFile(t, dir)
	later := fill(t, dir, "/node/a", "2", "/node/b", "3", "/node/c", "4")

	err := Restore(dir, backup, false)
	if !errors.Is(err, ErrExists) {
		t.Fatalf("Restore over a store without force: %v, want ErrExists", err)
	}
	if err := Restore(dir, backup, true); err != nil {
		t.Fatalf("Restore with force: %v", err)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(context.Background(), "/node/a"); err == nil {
		t.Error("/node/a, written after the backup, is still there")
	}
	rev, err := s.Put(context.Background(), "/node/new", nil, 0)
	if err != nil || rev <= later {
		t.Errorf("first write after the restore: rev %d, %v; want above %d", rev, err, later)
	}
	s.Close()
	// The replaced store is kept, whole.
	b, err := os.ReadFile(filepath.Join(dir, FileName+PreRestoreSuffix))
	if err != nil {
		t.Fatalf("pre-restore copy: %v", err)
	}
	keep := t.TempDir()
	if err := os.WriteFile(filepath.Join(keep, FileName), b, 0o600); err != nil {
		t.Fatal(err)
	}
	ks, err := Open(keep)
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	if _, err := ks.Get(context.Background(), "/node/c"); err != nil {
		t.Errorf("pre-restore copy lacks /node/c: %v", err)
	}
}

// A store held by a controller can be neither copied nor replaced.
func TestBackupRestoreRefuseLockedStore(t *testing.T) {
	dir := t.TempDir()
	fill(t, dir, "/node/n1", "n1")
	backup := backupFile(t, dir)
	s, err := Open(dir) // the running controller
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Backup(context.Background(), dir, &bytes.Buffer{}); !errors.Is(err, ErrLocked) {
		t.Errorf("Backup of an open store: %v, want ErrLocked", err)
	}
	if err := Restore(dir, backup, true); !errors.Is(err, ErrLocked) {
		t.Errorf("Restore over an open store: %v, want ErrLocked", err)
	}
	if _, err := s.Get(context.Background(), "/node/n1"); err != nil {
		t.Errorf("the open store lost /node/n1: %v", err)
	}
}

func TestBackupRestoreBadInput(t *testing.T) {
	empty := t.TempDir()
	if _, err := Backup(context.Background(), empty, &bytes.Buffer{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Backup of a directory without store: %v, want ErrNotExist", err)
	}
	if _, err := os.Stat(filepath.Join(empty, FileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Backup created a store: %v", err)
	}
	garbage := filepath.Join(t.TempDir(), "garbage")
	if err := os.WriteFile(garbage, bytes.Repeat([]byte("x"), 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	for _, from := range []string{garbage, filepath.Join(dst, "missing.db")} {
		if err := Restore(dst, from, true); err == nil || !strings.Contains(err.Error(), from) {
			t.Errorf("Restore from %s: %v, want an error naming it", from, err)
		}
	}
	if ents, _ := os.ReadDir(dst); len(ents) != 0 {
		t.Errorf("failed restores left %d files", len(ents))
	}
}

func TestVerifyTellsEtcdSnapshot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snap.db")
	if err := writeFakeEtcdFile(path); err != nil {
		t.Fatal(err)
	}
	err := Verify(path)
	if err == nil || !strings.Contains(err.Error(), "etcd snapshot") {
		t.Errorf("Verify(etcd-like file): %v, want an error naming an etcd snapshot", err)
	}
}

// writeFakeEtcdFile writes a bolt file laid out like an etcd backend.
func writeFakeEtcdFile(path string) error {
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		return err
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range []string{"key", "members", "meta"} {
			if _, err := tx.CreateBucket([]byte(b)); err != nil {
				return err
			}
		}
		return nil
	})
	return errors.Join(err, db.Close())
}

// The restored file belongs to the data directory's owner (the
// controller's user), though root restores it.
func TestRestoreKeepsDirectoryOwner(t *testing.T) {
	testutil.RequireRoot(t) // to give files away
	src := t.TempDir()
	fill(t, src, "/node/n1", "n1")
	backup := backupFile(t, src)
	dst := t.TempDir()
	if err := os.Chown(dst, 4242, 4343); err != nil {
		t.Fatal(err)
	}
	if err := Restore(dst, backup, false); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dst, FileName))
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 4242 || st.Gid != 4343 || fi.Mode().Perm() != 0o600 {
		t.Errorf("restored file: uid %d gid %d mode %v, want 4242 4343 0600", st.Uid, st.Gid, fi.Mode().Perm())
	}
}
