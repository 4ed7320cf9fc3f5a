package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// MaxUpdateAttempts bounds the compare-and-set attempts of Update.
const MaxUpdateAttempts = 64

// Change is what an Update function decides for its key.
type Change int

const (
	Keep   Change = iota // write nothing
	Write                // store the value returned
	Remove               // delete the key
)

// Update is a read-modify-write of key with compare-and-set: it reads the
// key (exists is false when missing, cur is then zero) and calls fn, which
// returns what to do (and the new value for Write). A write or delete that
// loses a race is retried after a short random pause, calling fn again. An
// error from fn stops it and is returned as is.
//
// It returns the key as it ended: the value written with its new revision,
// the value read (Keep), or the value deleted (Remove); and the change
// made. After MaxUpdateAttempts lost races it returns ErrConflict.
func Update(ctx context.Context, s Store, key string, fn func(cur KV, exists bool) ([]byte, Change, error)) (KV, Change, error) {
	for attempt := range MaxUpdateAttempts {
		if attempt > 0 && !pause(ctx, attempt) {
			return KV{}, Keep, fmt.Errorf("updating %s: %w", key, ctx.Err())
		}
		cur, err := s.Get(ctx, key)
		exists := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			return KV{}, Keep, err
		}
		value, c, err := fn(cur, exists)
		if err != nil || c == Keep {
			return cur, Keep, err
		}
		if c == Remove {
			if !exists {
				return cur, Keep, nil
			}
			err := s.Delete(ctx, key, cur.Revision)
			if errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) {
				continue // changed or deleted meanwhile: read it again
			}
			return cur, Remove, err
		}
		rev, err := s.Put(ctx, key, value, cur.Revision) // 0 when missing: create-only
		if errors.Is(err, ErrConflict) {
			continue
		}
		if err != nil {
			return cur, Keep, err
		}
		return KV{Key: key, Value: value, Revision: rev}, Write, nil
	}
	return KV{}, Keep, fmt.Errorf("updating %s: %d attempts: %w", key, MaxUpdateAttempts, ErrConflict)
}

// pause waits a random moment, growing exponentially with attempt (up to
// 10 ms), before retrying a compare-and-set that lost: without it, a writer
// can lose every attempt to one that keeps writing. False if ctx is done.
func pause(ctx context.Context, attempt int) bool {
	ceiling := min(50*time.Microsecond<<min(attempt, 10), 10*time.Millisecond)
	select {
	case <-ctx.Done():
		return false
	case <-time.After(rand.N(ceiling) + time.Microsecond):
		return true
	}
}
