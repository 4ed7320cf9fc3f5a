package store

import (
	"context"
	"fmt"
)

// Batcher is implemented by the backends that write several keys in one
// transaction (one fsync for bolt, one raft entry for etcd).
type Batcher interface {
	// PutAll writes every kv.Value at kv.Key, unconditionally, in one
	// transaction (etcd: in transactions of at most MaxBatch keys).
	PutAll(ctx context.Context, kvs []KV) error
}

// MaxBatch is the most keys one etcd transaction writes (etcd's default
// --max-txn-ops).
const MaxBatch = 128

// PutAll writes every kv unconditionally: in one transaction when st is a
// Batcher, else key after key.
func PutAll(ctx context.Context, st Store, kvs []KV) error {
	if b, ok := st.(Batcher); ok {
		return b.PutAll(ctx, kvs)
	}
	for _, kv := range kvs {
		if _, err := st.Put(ctx, kv.Key, kv.Value, Any); err != nil {
			return fmt.Errorf("putting %s: %w", kv.Key, err)
		}
	}
	return nil
}
