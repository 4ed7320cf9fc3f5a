// Package etcd is the store backend on an etcd v3 cluster, for several
// controllers sharing one desired state.
//
// A key's revision is its etcd ModRevision; compare-and-set is an etcd
// transaction. Watch starts at the revision following the call.
package etcd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/rik-org/rik/internal/store"
)

// DialTimeout bounds connecting to the cluster in Open.
const DialTimeout = 5 * time.Second

// Store is a store.Store on etcd.
type Store struct {
	cli    *clientv3.Client
	closed atomic.Bool
}

var _ store.Store = (*Store)(nil)

// Open connects to the cluster at endpoints ("host:port" or URLs) and checks
// it answers within DialTimeout.
func Open(ctx context.Context, endpoints []string) (*Store, error) {
	if len(endpoints) == 0 {
		return nil, errors.New("connecting to etcd: no endpoint")
	}
	name := strings.Join(endpoints, ",")
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: DialTimeout,
		Context:     context.WithoutCancel(ctx),
		Logger:      zap.NewNop(),
		// Allow the 1 MiB values the store promises, with room for the key.
		MaxCallSendMsgSize: 4 << 20,
		MaxCallRecvMsgSize: 64 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("connecting to etcd %s: %w", name, err)
	}
	pctx, cancel := context.WithTimeout(ctx, DialTimeout)
	defer cancel()
	if _, err := cli.Get(pctx, "/", clientv3.WithCountOnly()); err != nil {
		cli.Close()
		if ctx.Err() == nil && pctx.Err() != nil {
			return nil, fmt.Errorf("connecting to etcd %s: unreachable after %v: %w", name, DialTimeout, err)
		}
		return nil, fmt.Errorf("connecting to etcd %s: %w", name, err)
	}
	return &Store{cli: cli}, nil
}

// Get returns the key, or store.ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (store.KV, error) {
	if s.closed.Load() {
		return store.KV{}, fmt.Errorf("getting %s: %w", key, store.ErrClosed)
	}
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return store.KV{}, fmt.Errorf("getting %s: %w", key, s.mapErr(err))
	}
	if len(resp.Kvs) == 0 {
		return store.KV{}, fmt.Errorf("getting %s: %w", key, store.ErrNotFound)
	}
	return toKV(resp.Kvs[0]), nil
}

// Put writes value with the compare-and-set rules of store.Store.
func (s *Store) Put(ctx context.Context, key string, value []byte, expectRev int64) (int64, error) {
	if err := s.check(key); err != nil {
		return 0, fmt.Errorf("putting %s: %w", key, err)
	}
	put := clientv3.OpPut(key, string(value))
	if expectRev < 0 {
		resp, err := s.cli.Do(ctx, put)
		if err != nil {
			return 0, fmt.Errorf("putting %s: %w", key, s.mapErr(err))
		}
		return resp.Put().Header.Revision, nil
	}
	cmp := clientv3.Compare(clientv3.ModRevision(key), "=", expectRev)
	if expectRev == 0 {
		cmp = clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	}
	resp, err := s.cli.Txn(ctx).If(cmp).Then(put).Commit()
	if err != nil {
		return 0, fmt.Errorf("putting %s: %w", key, s.mapErr(err))
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("putting %s: %w", key, store.ErrConflict)
	}
	return resp.Header.Revision, nil
}

// PutAll writes every kv unconditionally, store.MaxBatch keys per
// transaction (store.Batcher).
func (s *Store) PutAll(ctx context.Context, kvs []store.KV) error {
	for _, kv := range kvs {
		if err := s.check(kv.Key); err != nil {
			return fmt.Errorf("putting %s: %w", kv.Key, err)
		}
	}
	for chunk := range slices.Chunk(kvs, store.MaxBatch) {
		ops := make([]clientv3.Op, 0, len(chunk))
		for _, kv := range chunk {
			ops = append(ops, clientv3.OpPut(kv.Key, string(kv.Value)))
		}
		if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return fmt.Errorf("putting %d keys: %w", len(chunk), s.mapErr(err))
		}
	}
	return nil
}

// Delete removes the key with the rules of store.Store: expectRev <= 0 is
// unconditional; a missing key is store.ErrNotFound.
func (s *Store) Delete(ctx context.Context, key string, expectRev int64) error {
	if err := s.check(key); err != nil {
		return fmt.Errorf("deleting %s: %w", key, err)
	}
	if expectRev <= 0 {
		resp, err := s.cli.Delete(ctx, key)
		if err != nil {
			return fmt.Errorf("deleting %s: %w", key, s.mapErr(err))
		}
		if resp.Deleted == 0 {
			return fmt.Errorf("deleting %s: %w", key, store.ErrNotFound)
		}
		return nil
	}
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", expectRev)).
		Then(clientv3.OpDelete(key)).
		Else(clientv3.OpGet(key, clientv3.WithCountOnly())).
		Commit()
	if err != nil {
		return fmt.Errorf("deleting %s: %w", key, s.mapErr(err))
	}
	if !resp.Succeeded {
		if len(resp.Responses) == 1 && resp.Responses[0].GetResponseRange().GetCount() == 0 {
			return fmt.Errorf("deleting %s: %w", key, store.ErrNotFound)
		}
		return fmt.Errorf("deleting %s: %w", key, store.ErrConflict)
	}
	return nil
}

// List returns every key with the prefix, sorted by key.
func (s *Store) List(ctx context.Context, prefix string) ([]store.KV, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("listing %s: %w", prefix, store.ErrClosed)
	}
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", prefix, s.mapErr(err))
	}
	out := make([]store.KV, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, toKV(kv))
	}
	return out, nil
}

// Watch streams the changes to keys with the prefix made after the call,
// starting at the revision after the current one. The channel is closed when
// ctx ends, when the store is closed, or when etcd ends the watch (for
// instance after a compaction); callers then re-list and re-watch.
func (s *Store) Watch(ctx context.Context, prefix string) (<-chan store.Event, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("watching %s: %w", prefix, store.ErrClosed)
	}
	// Any read returns the store's current revision in its header.
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithCountOnly())
	if err != nil {
		return nil, fmt.Errorf("watching %s: %w", prefix, s.mapErr(err))
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	wch := s.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	out := make(chan store.Event)
	go func() {
		defer close(out)
		defer cancel()
		for wr := range wch {
			if wr.Err() != nil {
				return
			}
			for _, ev := range wr.Events {
				e := store.Event{Type: store.EventPut, KV: toKV(ev.Kv)}
				if ev.Type == mvccpb.DELETE {
					e.Type = store.EventDelete
					e.KV.Value = nil
				}
				select {
				case out <- e:
				case <-wctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// Close closes the client and every watch. Later calls return store.ErrClosed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return store.ErrClosed
	}
	if err := s.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("closing etcd client: %w", err)
	}
	return nil
}

func (s *Store) check(key string) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	if key == "" {
		return errors.New("empty key")
	}
	return nil
}

// mapErr reports errors of a client closed under a running call as ErrClosed.
func (s *Store) mapErr(err error) error {
	if s.closed.Load() {
		return fmt.Errorf("%w: %w", store.ErrClosed, err)
	}
	return err
}

func toKV(kv *mvccpb.KeyValue) store.KV {
	return store.KV{Key: string(kv.Key), Value: kv.Value, Revision: kv.ModRevision}
}
