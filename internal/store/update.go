package store

import (
	"context"
	"errors"
	"fmt"
)

// MaxUpdateAttempts bounds the compare-and-set retries of Update.
const MaxUpdateAttempts = 64

// Update is a read-modify-write of key with compare-and-set: it reads the
// key (exists is false when missing, cur is then zero), calls fn for the new
// value and writes it at the revision read, calling fn again on a
// conflict. An error from fn stops it and is returned as is. It returns the
// revision written, or ErrConflict after MaxUpdateAttempts lost races.
func Update(ctx context.Context, s Store, key string, fn func(cur KV, exists bool) ([]byte, error)) (int64, error) {
	for range MaxUpdateAttempts {
		cur, err := s.Get(ctx, key)
		exists := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			return 0, err
		}
		value, err := fn(cur, exists)
		if err != nil {
			return 0, err
		}
		rev, err := s.Put(ctx, key, value, cur.Revision) // 0 when missing: create-only
		if errors.Is(err, ErrConflict) {
			continue
		}
		return rev, err
	}
	return 0, fmt.Errorf("updating %s: %d attempts: %w", key, MaxUpdateAttempts, ErrConflict)
}
