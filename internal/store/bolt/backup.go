package bolt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	bbolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"
)

// PreRestoreSuffix names the copy Restore keeps of the store it replaces.
const PreRestoreSuffix = ".pre-restore"

// ErrExists is the error of restoring over a store without force.
var ErrExists = errors.New("a store is already there")

// Backup writes a consistent copy of the store in the directory dir to w,
// and returns its size. It reads the file in one read-only transaction, so
// it needs the file's lock: while a controller has the store open, Backup
// fails with ErrLocked (stop the controller for the copy, or use etcd).
func Backup(ctx context.Context, dir string, w io.Writer) (int64, error) {
	path := filepath.Join(dir, FileName)
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("backing up %s: %w", path, err)
	}
	db, err := openReadOnly(path)
	if err != nil {
		return 0, fmt.Errorf("backing up %s: %w", path, err)
	}
	defer db.Close()
	var n int64
	err = db.View(func(tx *bbolt.Tx) error {
		if _, err := checkLayout(tx); err != nil {
			return err
		}
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("backing up %s: %w", path, err)
	}
	return n, nil
}

// Restore puts the backup file from in place as the store of the directory
// dir (created if missing). The controller must be stopped: a store in use
// is refused with ErrLocked. An existing store is replaced only with force,
// and kept next to it with PreRestoreSuffix. The restored store's revision
// counter is raised past the replaced one's, so revisions never go back.
func Restore(dir, from string, force bool) error {
	path := filepath.Join(dir, FileName)
	if err := Verify(from); err != nil {
		return fmt.Errorf("restoring %s from %s: %w", path, from, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("restoring %s: %w", path, err)
	}
	if err := restore(path, from, force); err != nil {
		return fmt.Errorf("restoring %s from %s: %w", path, from, err)
	}
	return nil
}

func restore(path, from string, force bool) error {
	var oldRev int64
	_, err := os.Stat(path)
	existed := err == nil
	switch {
	case existed && !force:
		return ErrExists
	case existed:
		rev, release, err := holdOld(path)
		if err != nil {
			return err
		}
		defer release()
		oldRev = rev
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	tmp, err := copyBeside(path, from)
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // no-op after the rename
	if existed {
		if err := raiseRev(tmp, oldRev+1); err != nil {
			return err
		}
		keep := path + PreRestoreSuffix
		if err := os.Remove(keep); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if err := os.Link(path, keep); err != nil {
			return fmt.Errorf("keeping the replaced store: %w", err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// holdOld locks the store at path, so that no controller starts on it
// during the restore, and reads its revision. A file bolt cannot read (the
// reason for the restore, maybe) is locked all the same, at revision 0.
func holdOld(path string) (rev int64, release func(), err error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: lockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return 0, nil, ErrLocked
	}
	if err == nil {
		_ = db.View(func(tx *bbolt.Tx) error {
			rev, _ = checkLayout(tx)
			return nil
		})
		return rev, func() { db.Close() }, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return 0, nil, ErrLocked
	}
	return 0, func() { f.Close() }, nil
}

// Verify checks that path is a store rik can open: a bolt file with rik's
// buckets. An etcd snapshot (also a bolt file) gets an error saying so.
func Verify(path string) error {
	db, err := openReadOnly(path)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(func(tx *bbolt.Tx) error {
		_, err := checkLayout(tx)
		return err
	})
}

// openReadOnly opens an existing bolt file without writing to it, sharing
// its lock with other readers.
func openReadOnly(path string) (*bbolt.DB, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: lockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, ErrLocked
	}
	if err != nil {
		return nil, fmt.Errorf("not a store: %w", err)
	}
	return db, nil
}

// checkLayout checks rik's buckets are there and returns the revision.
func checkLayout(tx *bbolt.Tx) (int64, error) {
	meta, kv := tx.Bucket(bucketMeta), tx.Bucket(bucketKV)
	if meta == nil || kv == nil {
		if tx.Bucket([]byte("key")) != nil && tx.Bucket([]byte("members")) != nil {
			return 0, errors.New("this is an etcd snapshot, not a bolt store: restore it with etcdutl snapshot restore (docs/operations.md)")
		}
		return 0, errors.New("not a rik store: no meta and kv buckets")
	}
	return readRev(meta)
}

// copyBeside copies from into a new temporary file next to path, synced.
func copyBeside(path, from string) (string, error) {
	src, err := os.Open(from)
	if err != nil {
		return "", err
	}
	defer src.Close()
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".restore-*")
	if err != nil {
		return "", err
	}
	_, err = io.Copy(tmp, src)
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = chownLike(tmp, filepath.Dir(path))
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", err
	}
	return tmp.Name(), nil
}

// raiseRev sets the revision counter of the bolt file at path to at least
// floor.
func raiseRev(path string, floor int64) error {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: lockTimeout})
	if err != nil {
		return err
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		rev, err := checkLayout(tx)
		if err != nil || rev >= floor {
			return err
		}
		return writeRev(tx.Bucket(bucketMeta), floor)
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return err
}

// chownLike gives f the owner of dir (the controller's user owns its data
// directory), when run as root.
func chownLike(f *os.File, dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || os.Geteuid() != 0 {
		return nil
	}
	return f.Chown(int(st.Uid), int(st.Gid))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
