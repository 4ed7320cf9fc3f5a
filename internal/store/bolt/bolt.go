// Package bolt is the embedded store backend, one bbolt file per controller.
//
// Every key is stored with the revision of its last write. A global revision
// counter, kept in the same file, grows by one on every Put and Delete and
// survives restarts.
//
// Watch is an in-process fan-out: events are delivered in revision order,
// and a writer never waits for a watcher. Each watcher has a buffer of
// WatchBuffer events; a watcher that lets its buffer fill up has its channel
// closed (an overflow), exactly as when its ctx ends. A caller that sees the
// channel close while its ctx is still live must re-list and re-watch.
package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bbolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/rik-org/rik/internal/store"
)

// FileName is the database file inside the data directory.
const FileName = "rik.db"

// WatchBuffer is how many undelivered events a watcher may hold before its
// channel is closed.
const WatchBuffer = 1024

// lockTimeout bounds the wait for the file lock held by another process.
const lockTimeout = time.Second

// ErrLocked is the error of opening a store another process (a running
// controller) holds.
var ErrLocked = errors.New("locked by another process")

var (
	bucketMeta = []byte("meta")
	bucketKV   = []byte("kv")
	keyRev     = []byte("revision")
)

// Store is a store.Store on a bbolt file.
type Store struct {
	db   *bbolt.DB
	path string

	// wmu serialises writes with the fan-out of their events, so watchers
	// see events in revision order, and guards the watchers and closed.
	wmu      sync.Mutex
	watchers map[*watcher]struct{}
	closed   bool
	buffer   int
}

var _ store.Store = (*Store)(nil)

type watcher struct {
	prefix string
	ch     chan store.Event
}

// Open opens (creating if needed) the store in the directory dir, in the file
// dir/rik.db. The directory is created with mode 0700 if missing. If another
// process holds the file, Open fails after one second with an error saying so.
func Open(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("opening store: empty directory")
	}
	path := filepath.Join(dir, FileName)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: lockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("opening store %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketMeta); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(bucketKV)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("opening store %s: creating buckets: %w", path, err)
	}
	return &Store{
		db:       db,
		path:     path,
		watchers: make(map[*watcher]struct{}),
		buffer:   WatchBuffer,
	}, nil
}

// Path is the database file.
func (s *Store) Path() string { return s.path }

// Exclusive reports that only one process can open the store at a time (the
// file is locked), so nothing else can be writing to it.
func (s *Store) Exclusive() bool { return true }

// Get returns the key, or store.ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (store.KV, error) {
	if err := ctx.Err(); err != nil {
		return store.KV{}, fmt.Errorf("getting %s: %w", key, err)
	}
	var kv store.KV
	err := s.db.View(func(tx *bbolt.Tx) error {
		raw := tx.Bucket(bucketKV).Get([]byte(key))
		if raw == nil {
			return store.ErrNotFound
		}
		var err error
		kv, err = decode(key, raw)
		return err
	})
	if err != nil {
		return store.KV{}, fmt.Errorf("getting %s: %w", key, mapErr(err))
	}
	return kv, nil
}

// Put writes value with the compare-and-set rules of store.Store.
func (s *Store) Put(ctx context.Context, key string, value []byte, expectRev int64) (int64, error) {
	if err := checkKey(ctx, key); err != nil {
		return 0, fmt.Errorf("putting %s: %w", key, err)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return 0, fmt.Errorf("putting %s: %w", key, store.ErrClosed)
	}
	var rev int64
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketKV)
		cur, err := currentRev(key, b.Get([]byte(key)))
		if err != nil {
			return err
		}
		switch {
		case expectRev == 0 && cur != 0:
			return store.ErrConflict
		case expectRev > 0 && cur != expectRev:
			return store.ErrConflict
		}
		rev, err = nextRev(tx)
		if err != nil {
			return err
		}
		return b.Put([]byte(key), encode(rev, value))
	})
	if err != nil {
		return 0, fmt.Errorf("putting %s: %w", key, mapErr(err))
	}
	s.publish(store.Event{Type: store.EventPut, KV: store.KV{Key: key, Value: bytes.Clone(value), Revision: rev}})
	return rev, nil
}

// PutAll writes every kv unconditionally in one transaction
// (store.Batcher).
func (s *Store) PutAll(ctx context.Context, kvs []store.KV) error {
	for _, kv := range kvs {
		if err := checkKey(ctx, kv.Key); err != nil {
			return fmt.Errorf("putting %s: %w", kv.Key, err)
		}
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return fmt.Errorf("putting %d keys: %w", len(kvs), store.ErrClosed)
	}
	revs := make([]int64, len(kvs))
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketKV)
		for i, kv := range kvs {
			rev, err := nextRev(tx)
			if err != nil {
				return err
			}
			revs[i] = rev
			if err := b.Put([]byte(kv.Key), encode(rev, kv.Value)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("putting %d keys: %w", len(kvs), mapErr(err))
	}
	for i, kv := range kvs {
		s.publish(store.Event{Type: store.EventPut, KV: store.KV{Key: kv.Key, Value: bytes.Clone(kv.Value), Revision: revs[i]}})
	}
	return nil
}

// Delete removes the key with the rules of store.Store: expectRev <= 0 is
// unconditional; a missing key is store.ErrNotFound.
func (s *Store) Delete(ctx context.Context, key string, expectRev int64) error {
	if err := checkKey(ctx, key); err != nil {
		return fmt.Errorf("deleting %s: %w", key, err)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return fmt.Errorf("deleting %s: %w", key, store.ErrClosed)
	}
	var rev int64
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketKV)
		cur, err := currentRev(key, b.Get([]byte(key)))
		if err != nil {
			return err
		}
		if cur == 0 {
			return store.ErrNotFound
		}
		if expectRev > 0 && cur != expectRev {
			return store.ErrConflict
		}
		rev, err = nextRev(tx)
		if err != nil {
			return err
		}
		return b.Delete([]byte(key))
	})
	if err != nil {
		return fmt.Errorf("deleting %s: %w", key, mapErr(err))
	}
	s.publish(store.Event{Type: store.EventDelete, KV: store.KV{Key: key, Revision: rev}})
	return nil
}

// List returns every key with the prefix, sorted by key.
func (s *Store) List(ctx context.Context, prefix string) ([]store.KV, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("listing %s: %w", prefix, err)
	}
	var out []store.KV
	err := s.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketKV).Cursor()
		p := []byte(prefix)
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			kv, err := decode(string(k), v)
			if err != nil {
				return err
			}
			out = append(out, kv)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", prefix, mapErr(err))
	}
	return out, nil
}

// Watch streams the changes to keys with the prefix made after the call.
// The channel is closed when ctx ends, when the store is closed, or when the
// watcher falls more than WatchBuffer events behind (see the package doc).
func (s *Store) Watch(ctx context.Context, prefix string) (<-chan store.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("watching %s: %w", prefix, err)
	}
	w := &watcher{prefix: prefix, ch: make(chan store.Event, s.buffer)}
	s.wmu.Lock()
	if s.closed {
		s.wmu.Unlock()
		return nil, fmt.Errorf("watching %s: %w", prefix, store.ErrClosed)
	}
	s.watchers[w] = struct{}{}
	s.wmu.Unlock()

	context.AfterFunc(ctx, func() {
		s.wmu.Lock()
		defer s.wmu.Unlock()
		s.dropLocked(w)
	})
	return w.ch, nil
}

// Close closes every watcher and the file. Later calls return store.ErrClosed.
func (s *Store) Close() error {
	s.wmu.Lock()
	if s.closed {
		s.wmu.Unlock()
		return store.ErrClosed
	}
	s.closed = true
	for w := range s.watchers {
		s.dropLocked(w)
	}
	s.wmu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("closing store %s: %w", s.path, err)
	}
	return nil
}

// publish hands ev to every watcher of its key without blocking; s.wmu held.
func (s *Store) publish(ev store.Event) {
	for w := range s.watchers {
		if len(ev.KV.Key) < len(w.prefix) || ev.KV.Key[:len(w.prefix)] != w.prefix {
			continue
		}
		select {
		case w.ch <- ev:
		default: // overflow: the watcher must re-list and re-watch.
			s.dropLocked(w)
		}
	}
}

// dropLocked closes w's channel once; s.wmu held.
func (s *Store) dropLocked(w *watcher) {
	if _, ok := s.watchers[w]; !ok {
		return
	}
	delete(s.watchers, w)
	close(w.ch)
}

func checkKey(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if key == "" {
		return errors.New("empty key")
	}
	if len(key) > bbolt.MaxKeySize {
		return fmt.Errorf("key longer than %d bytes", bbolt.MaxKeySize)
	}
	return nil
}

// nextRev increments and returns the global revision.
func nextRev(tx *bbolt.Tx) (int64, error) {
	b := tx.Bucket(bucketMeta)
	rev, err := readRev(b)
	if err != nil {
		return 0, err
	}
	rev++
	return rev, writeRev(b, rev)
}

// readRev returns the global revision kept in the meta bucket, 0 if none.
func readRev(meta *bbolt.Bucket) (int64, error) {
	raw := meta.Get(keyRev)
	if raw == nil {
		return 0, nil
	}
	if len(raw) != 8 {
		return 0, fmt.Errorf("corrupt revision counter (%d bytes)", len(raw))
	}
	return int64(binary.BigEndian.Uint64(raw)), nil
}

func writeRev(meta *bbolt.Bucket, rev int64) error {
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], uint64(rev))
	return meta.Put(keyRev, buf[:])
}

// encode lays out a record as 8 bytes of revision then the value.
func encode(rev int64, value []byte) []byte {
	buf := make([]byte, 8+len(value))
	binary.BigEndian.PutUint64(buf, uint64(rev))
	copy(buf[8:], value)
	return buf
}

// decode copies a record out of bolt's memory map.
func decode(key string, raw []byte) (store.KV, error) {
	if len(raw) < 8 {
		return store.KV{}, fmt.Errorf("corrupt record %s (%d bytes)", key, len(raw))
	}
	return store.KV{
		Key:      key,
		Value:    bytes.Clone(raw[8:]),
		Revision: int64(binary.BigEndian.Uint64(raw)),
	}, nil
}

// currentRev is the revision of a raw record, 0 if absent.
func currentRev(key string, raw []byte) (int64, error) {
	if raw == nil {
		return 0, nil
	}
	if len(raw) < 8 {
		return 0, fmt.Errorf("corrupt record %s (%d bytes)", key, len(raw))
	}
	return int64(binary.BigEndian.Uint64(raw)), nil
}

func mapErr(err error) error {
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return store.ErrClosed
	}
	return err
}
