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
	incr := func(cur store.KV, exists bool) ([]byte, store.Change, error) {
		n := 0
		if exists {
			var err error
			if n, err = strconv.Atoi(string(cur.Value)); err != nil {
				return nil, store.Keep, err
			}
		}
		return []byte(strconv.Itoa(n + 1)), store.Write, nil
	}

	// Creates a missing key, then races with itself without losing updates.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 10 {
				if _, c, err := store.Update(ctx, s, "/n", incr); err != nil || c != store.Write {
					t.Error(c, err)
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

	// What was written is returned with its revision.
	got, _, err := store.Update(ctx, s, "/n", incr)
	if now, _ := s.Get(ctx, "/n"); err != nil || got.Revision != now.Revision || string(got.Value) != "41" {
		t.Fatalf("Update returned %+v, %v; stored %+v", got, err, now)
	}
	kv = got

	// An error from fn is returned and nothing is written; Keep writes
	// nothing and returns what was read.
	boom := errors.New("boom")
	_, _, err = store.Update(ctx, s, "/n", func(store.KV, bool) ([]byte, store.Change, error) { return nil, store.Write, boom })
	if !errors.Is(err, boom) {
		t.Fatalf("error = %v, want boom", err)
	}
	got, c, err := store.Update(ctx, s, "/n", func(store.KV, bool) ([]byte, store.Change, error) { return []byte("x"), store.Keep, nil })
	if err != nil || c != store.Keep || got.Revision != kv.Revision || string(got.Value) != "41" {
		t.Fatalf("Keep: %+v %v %v", got, c, err)
	}
	if kv2, _ := s.Get(ctx, "/n"); kv2.Revision != kv.Revision {
		t.Fatal("failed or kept update wrote the key")
	}

	// A key that changes on every attempt ends in ErrConflict.
	attempts := 0
	_, _, err = store.Update(ctx, s, "/n", func(cur store.KV, _ bool) ([]byte, store.Change, error) {
		attempts++
		if _, err := s.Put(ctx, "/n", []byte("0"), store.Any); err != nil {
			return nil, store.Keep, err
		}
		return []byte("x"), store.Write, nil
	})
	if !errors.Is(err, store.ErrConflict) || attempts != store.MaxUpdateAttempts {
		t.Fatalf("error = %v after %d attempts, want ErrConflict after %d", err, attempts, store.MaxUpdateAttempts)
	}
}

func TestUpdateRemove(t *testing.T) {
	s, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	remove := func(store.KV, bool) ([]byte, store.Change, error) { return nil, store.Remove, nil }
	if _, err := s.Put(ctx, "/k", []byte("v"), store.Any); err != nil {
		t.Fatal(err)
	}

	// A delete that loses a race reads the key again: fn sees the new value.
	var seen []string
	raced := false
	got, c, err := store.Update(ctx, s, "/k", func(cur store.KV, exists bool) ([]byte, store.Change, error) {
		seen = append(seen, string(cur.Value))
		if !raced {
			raced = true
			if _, err := s.Put(ctx, "/k", []byte("v2"), store.Any); err != nil {
				return nil, store.Keep, err
			}
		}
		return nil, store.Remove, nil
	})
	if err != nil || c != store.Remove || string(got.Value) != "v2" || len(seen) != 2 || seen[1] != "v2" {
		t.Fatalf("Remove: %+v %v %v, fn saw %q", got, c, err, seen)
	}
	if _, err := s.Get(ctx, "/k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("key after Remove: %v", err)
	}
	// Removing a missing key changes nothing.
	if _, c, err := store.Update(ctx, s, "/k", remove); err != nil || c != store.Keep {
		t.Fatalf("Remove of a missing key: %v %v", c, err)
	}
}
