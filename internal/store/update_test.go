package store_test

import (
	"errors"
	"strconv"
	"sync"
	"testing"

	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/store/bolt"
)

func TestUpdate(t *testing.T) {
	s, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	incr := func(cur store.KV, exists bool) ([]byte, error) {
		n := 0
		if exists {
			var err error
			if n, err = strconv.Atoi(string(cur.Value)); err != nil {
				return nil, err
			}
		}
		return []byte(strconv.Itoa(n + 1)), nil
	}

	// Creates a missing key, then races with itself without losing updates.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 10 {
				if _, err := store.Update(ctx, s, "/n", incr); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	kv, err := s.Get(ctx, "/n")
	if err != nil || string(kv.Value) != "40" {
		t.Fatalf("after 40 updates: %q, %v", kv.Value, err)
	}

	// An error from fn is returned and nothing is written.
	boom := errors.New("boom")
	_, err = store.Update(ctx, s, "/n", func(store.KV, bool) ([]byte, error) { return nil, boom })
	if !errors.Is(err, boom) {
		t.Fatalf("error = %v, want boom", err)
	}
	if kv2, _ := s.Get(ctx, "/n"); kv2.Revision != kv.Revision {
		t.Fatal("failed update wrote the key")
	}

	// A key that changes on every attempt ends in ErrConflict.
	attempts := 0
	_, err = store.Update(ctx, s, "/n", func(cur store.KV, _ bool) ([]byte, error) {
		attempts++
		if _, err := s.Put(ctx, "/n", []byte("0"), store.Any); err != nil {
			return nil, err
		}
		return []byte("x"), nil
	})
	if !errors.Is(err, store.ErrConflict) || attempts != store.MaxUpdateAttempts {
		t.Fatalf("error = %v after %d attempts, want ErrConflict after %d", err, attempts, store.MaxUpdateAttempts)
	}
}
