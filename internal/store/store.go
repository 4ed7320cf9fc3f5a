// Package store is rik's key/value store: a small interface with revisions,
// compare-and-set, prefix listing and watch, and its backends (bolt, etcd).
package store

import (
	"context"
	"errors"
)

// Errors returned by every backend.
var (
	// ErrNotFound: the key does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a compare-and-set saw another revision than expected.
	ErrConflict = errors.New("revision conflict")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store closed")
)

// KV is one key with its value and the revision it was last written at.
type KV struct {
	Key   string
	Value []byte
	// Revision of the last write to this key; > 0 for a key that exists.
	Revision int64
}

// EventType says what happened to a key.
type EventType int

const (
	EventPut EventType = iota + 1
	EventDelete
)

// Event is one change seen by Watch.
type Event struct {
	Type EventType
	KV   KV // for a delete: the key, no value, the revision of the delete
}

// Store is the interface every backend implements. Keys are strings such as
// "/workload/pods/default/web"; revisions grow monotonically across the store.
type Store interface {
	// Get returns the key, or ErrNotFound.
	Get(ctx context.Context, key string) (KV, error)
	// Put writes value. With expectRev < 0 it writes unconditionally; with
	// expectRev == 0 the key must not exist; with expectRev > 0 the key's
	// revision must equal it. A failed condition returns ErrConflict.
	// It returns the new revision.
	Put(ctx context.Context, key string, value []byte, expectRev int64) (int64, error)
	// Delete removes the key, with the same expectRev rules as Put
	// (0 is treated like < 0). Deleting a missing key returns ErrNotFound.
	Delete(ctx context.Context, key string, expectRev int64) error
	// List returns every key with the prefix, sorted by key.
	List(ctx context.Context, prefix string) ([]KV, error)
	// Watch streams changes to keys with the prefix made after the call,
	// in revision order, until ctx is done; the channel is then closed.
	// A backend may also close it early (a watcher too slow to keep up, an
	// etcd compaction, Close): a caller whose ctx is still live then
	// re-lists and re-watches.
	Watch(ctx context.Context, prefix string) (<-chan Event, error)
	// Close releases the backend and closes every watch channel. Every
	// later call returns ErrClosed.
	Close() error
}

// Any revision: Put/Delete without condition.
const Any int64 = -1
