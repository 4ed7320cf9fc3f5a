// Package storetest is the conformance suite every store backend passes.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/store"
)

// wait bounds every wait for a watch event.
const wait = 10 * time.Second

// Run runs the suite. open must return a new, independent handle on the
// backend each time it is called (several handles may share one server: every
// subtest works under its own key prefix). The suite closes what open returns.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store, p string)
	}{
		{"GetMissing", testGetMissing},
		{"PutGet", testPutGet},
		{"RevisionsIncrease", testRevisionsIncrease},
		{"CreateOnly", testCreateOnly},
		{"CASUpdate", testCASUpdate},
		{"UnconditionalPut", testUnconditionalPut},
		{"Delete", testDelete},
		{"DeleteMissing", testDeleteMissing},
		{"List", testList},
		{"ListSiblingPrefix", testListSiblingPrefix},
		{"Watch", testWatch},
		{"WatchOnlyAfterCall", testWatchOnlyAfterCall},
		{"WatchClosesOnCancel", testWatchClosesOnCancel},
		{"ConcurrentCAS", testConcurrentCAS},
		{"BinaryValue", testBinaryValue},
		{"LargeValue", testLargeValue},
		{"ValueOwnedByCaller", testValueOwnedByCaller},
		{"CanceledContext", testCanceledContext},
		{"Closed", testClosed},
		{"PutAll", testPutAll},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { s.Close() })
			tc.fn(t, s, Prefix())
		})
	}
}

// Prefix returns a key prefix unique to this test, ending in "/".
func Prefix() string {
	return "/storetest/" + rand.Text()[:10] + "/"
}

func ctx(t *testing.T) context.Context { return t.Context() }

func mustPut(t *testing.T, s store.Store, key, value string, expectRev int64) int64 {
	t.Helper()
	rev, err := s.Put(ctx(t), key, []byte(value), expectRev)
	if err != nil {
		t.Fatalf("Put(%q, rev %d): %v", key, expectRev, err)
	}
	if rev <= 0 {
		t.Fatalf("Put(%q) returned revision %d, want > 0", key, rev)
	}
	return rev
}

func mustGet(t *testing.T, s store.Store, key string) store.KV {
	t.Helper()
	kv, err := s.Get(ctx(t), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return kv
}

func testGetMissing(t *testing.T, s store.Store, p string) {
	_, err := s.Get(ctx(t), p+"missing")
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get(missing) error = %v, want ErrNotFound", err)
	}
}

func testPutGet(t *testing.T, s store.Store, p string) {
	rev := mustPut(t, s, p+"a", "hello", store.Any)
	kv := mustGet(t, s, p+"a")
	if kv.Key != p+"a" || string(kv.Value) != "hello" || kv.Revision != rev {
		t.Fatalf("Get = {%q %q %d}, want {%q %q %d}", kv.Key, kv.Value, kv.Revision, p+"a", "hello", rev)
	}
}

func testRevisionsIncrease(t *testing.T, s store.Store, p string) {
	var last int64
	for i, key := range []string{"a", "b", "a", "c", "b"} {
		rev := mustPut(t, s, p+key, strconv.Itoa(i), store.Any)
		if rev <= last {
			t.Fatalf("write %d (%s): revision %d not above previous %d", i, key, rev, last)
		}
		last = rev
	}
	if err := s.Delete(ctx(t), p+"a", store.Any); err != nil {
		t.Fatal(err)
	}
	if rev := mustPut(t, s, p+"d", "x", store.Any); rev <= last {
		t.Fatalf("revision after a delete %d, want > %d", rev, last)
	}
}

func testCreateOnly(t *testing.T, s store.Store, p string) {
	rev := mustPut(t, s, p+"k", "first", 0)
	_, err := s.Put(ctx(t), p+"k", []byte("second"), 0)
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second create-only Put error = %v, want ErrConflict", err)
	}
	kv := mustGet(t, s, p+"k")
	if string(kv.Value) != "first" || kv.Revision != rev {
		t.Fatalf("after failed create: {%q %d}, want {first %d}", kv.Value, kv.Revision, rev)
	}
	// Create-only works again once the key is deleted.
	if err := s.Delete(ctx(t), p+"k", store.Any); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, p+"k", "again", 0)
}

func testCASUpdate(t *testing.T, s store.Store, p string) {
	rev1 := mustPut(t, s, p+"k", "v1", 0)
	rev2 := mustPut(t, s, p+"k", "v2", rev1)
	if rev2 <= rev1 {
		t.Fatalf("CAS revision %d not above %d", rev2, rev1)
	}
	_, err := s.Put(ctx(t), p+"k", []byte("stale"), rev1)
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Put with stale revision error = %v, want ErrConflict", err)
	}
	if kv := mustGet(t, s, p+"k"); string(kv.Value) != "v2" || kv.Revision != rev2 {
		t.Fatalf("after stale Put: {%q %d}, want {v2 %d}", kv.Value, kv.Revision, rev2)
	}
	_, err = s.Put(ctx(t), p+"missing", []byte("x"), rev2)
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Put on missing key with revision error = %v, want ErrConflict", err)
	}
	if _, err := s.Get(ctx(t), p+"missing"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("failed CAS created the key: Get error = %v", err)
	}
}

func testUnconditionalPut(t *testing.T, s store.Store, p string) {
	rev1 := mustPut(t, s, p+"k", "v1", store.Any)
	rev2 := mustPut(t, s, p+"k", "v2", store.Any)
	if rev2 <= rev1 {
		t.Fatalf("revision %d not above %d", rev2, rev1)
	}
	if kv := mustGet(t, s, p+"k"); string(kv.Value) != "v2" || kv.Revision != rev2 {
		t.Fatalf("Get = {%q %d}, want {v2 %d}", kv.Value, kv.Revision, rev2)
	}
}

func testDelete(t *testing.T, s store.Store, p string) {
	rev1 := mustPut(t, s, p+"k", "v1", store.Any)
	rev2 := mustPut(t, s, p+"k", "v2", rev1)
	if err := s.Delete(ctx(t), p+"k", rev1); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Delete with stale revision error = %v, want ErrConflict", err)
	}
	mustGet(t, s, p+"k")
	if err := s.Delete(ctx(t), p+"k", rev2); err != nil {
		t.Fatalf("Delete with current revision: %v", err)
	}
	if _, err := s.Get(ctx(t), p+"k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after Delete error = %v, want ErrNotFound", err)
	}
	// Without condition: Any and 0.
	for _, expect := range []int64{store.Any, 0} {
		mustPut(t, s, p+"k", "v", store.Any)
		if err := s.Delete(ctx(t), p+"k", expect); err != nil {
			t.Fatalf("Delete(rev %d): %v", expect, err)
		}
		if _, err := s.Get(ctx(t), p+"k"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get after Delete(rev %d) error = %v, want ErrNotFound", expect, err)
		}
	}
}

func testDeleteMissing(t *testing.T, s store.Store, p string) {
	for _, expect := range []int64{store.Any, 0, 5} {
		if err := s.Delete(ctx(t), p+"missing", expect); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Delete(missing, rev %d) error = %v, want ErrNotFound", expect, err)
		}
	}
}

func testList(t *testing.T, s store.Store, p string) {
	revs := map[string]int64{}
	for _, k := range []string{"c", "a", "b/x", "b"} {
		revs[k] = mustPut(t, s, p+"dir/"+k, "v-"+k, store.Any)
	}
	mustPut(t, s, p+"other", "no", store.Any)
	got, err := s.List(ctx(t), p+"dir/")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a", "b", "b/x", "c"}
	if len(got) != len(want) {
		t.Fatalf("List returned %d keys %v, want %v", len(got), keys(got), want)
	}
	for i, k := range want {
		kv := got[i]
		if kv.Key != p+"dir/"+k || string(kv.Value) != "v-"+k || kv.Revision != revs[k] {
			t.Fatalf("List[%d] = {%q %q %d}, want {%q %q %d}", i, kv.Key, kv.Value, kv.Revision, p+"dir/"+k, "v-"+k, revs[k])
		}
	}
	empty, err := s.List(ctx(t), p+"nothing/")
	if err != nil || len(empty) != 0 {
		t.Fatalf("List(empty prefix) = %v, %v; want nothing", keys(empty), err)
	}
}

func testListSiblingPrefix(t *testing.T, s store.Store, p string) {
	mustPut(t, s, p+"a/b/1", "in", store.Any)
	mustPut(t, s, p+"a/bc/1", "sibling", store.Any)
	mustPut(t, s, p+"a/b", "parent", store.Any)
	got, err := s.List(ctx(t), p+"a/b/")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Key != p+"a/b/1" {
		t.Fatalf("List(%q) = %v, want only %q", p+"a/b/", keys(got), p+"a/b/1")
	}
}

func keys(kvs []store.KV) []string {
	var out []string
	for _, kv := range kvs {
		out = append(out, kv.Key)
	}
	return out
}

// next receives one event or fails after wait.
func next(t *testing.T, ch <-chan store.Event) store.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed early")
		}
		return ev
	case <-time.After(wait):
		t.Fatal("no watch event")
	}
	return store.Event{}
}

func testWatch(t *testing.T, s store.Store, p string) {
	ch, err := s.Watch(ctx(t), p+"w/")
	if err != nil {
		t.Fatal(err)
	}
	r1 := mustPut(t, s, p+"w/a", "1", store.Any)
	mustPut(t, s, p+"x/a", "outside", store.Any)
	mustPut(t, s, p+"wa", "sibling", store.Any)
	r2 := mustPut(t, s, p+"w/b", "2", store.Any)
	if err := s.Delete(ctx(t), p+"w/a", store.Any); err != nil {
		t.Fatal(err)
	}
	r4 := mustPut(t, s, p+"w/a", "3", 0)

	want := []struct {
		typ   store.EventType
		key   string
		value string
		rev   int64 // 0: between its neighbours
	}{
		{store.EventPut, "w/a", "1", r1},
		{store.EventPut, "w/b", "2", r2},
		{store.EventDelete, "w/a", "", 0},
		{store.EventPut, "w/a", "3", r4},
	}
	var last int64
	for i, w := range want {
		ev := next(t, ch)
		if ev.Type != w.typ || ev.KV.Key != p+w.key || string(ev.KV.Value) != w.value {
			t.Fatalf("event %d = {%v %q %q}, want {%v %q %q}", i, ev.Type, ev.KV.Key, ev.KV.Value, w.typ, p+w.key, w.value)
		}
		if w.rev != 0 && ev.KV.Revision != w.rev {
			t.Fatalf("event %d revision %d, want %d", i, ev.KV.Revision, w.rev)
		}
		if ev.KV.Revision <= last {
			t.Fatalf("event %d revision %d not above %d", i, ev.KV.Revision, last)
		}
		last = ev.KV.Revision
	}
	if last != r4 {
		t.Fatalf("last revision %d, want %d", last, r4)
	}
	select {
	case ev, ok := <-ch:
		if ok {
			t.Fatalf("unexpected event %v %q", ev.Type, ev.KV.Key)
		}
		t.Fatal("channel closed while ctx live")
	case <-time.After(100 * time.Millisecond):
	}
}

func testWatchOnlyAfterCall(t *testing.T, s store.Store, p string) {
	mustPut(t, s, p+"before", "old", store.Any)
	ch, err := s.Watch(ctx(t), p)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, p+"after", "new", store.Any)
	if ev := next(t, ch); ev.KV.Key != p+"after" {
		t.Fatalf("first event for %q, want %q", ev.KV.Key, p+"after")
	}
}

func testWatchClosesOnCancel(t *testing.T, s store.Store, p string) {
	wctx, cancel := context.WithCancel(ctx(t))
	ch, err := s.Watch(wctx, p)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, p+"a", "1", store.Any)
	next(t, ch)
	cancel()
	deadline := time.After(wait)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("watch channel not closed after cancel")
		}
	}
}

func testConcurrentCAS(t *testing.T, s store.Store, p string) {
	const workers, each = 8, 25
	key := p + "counter"
	mustPut(t, s, key, "0", 0)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for range each {
				if err := increment(ctx(t), s, key); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if kv := mustGet(t, s, key); string(kv.Value) != strconv.Itoa(workers*each) {
		t.Fatalf("counter = %s, want %d", kv.Value, workers*each)
	}
}

func increment(ctx context.Context, s store.Store, key string) error {
	for {
		kv, err := s.Get(ctx, key)
		if err != nil {
			return err
		}
		n, err := strconv.Atoi(string(kv.Value))
		if err != nil {
			return fmt.Errorf("counter %q: %w", kv.Value, err)
		}
		_, err = s.Put(ctx, key, []byte(strconv.Itoa(n+1)), kv.Revision)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		return err
	}
}

func testBinaryValue(t *testing.T, s store.Store, p string) {
	value := make([]byte, 256)
	for i := range value {
		value[i] = byte(i)
	}
	if _, err := s.Put(ctx(t), p+"bin", value, store.Any); err != nil {
		t.Fatal(err)
	}
	if kv := mustGet(t, s, p+"bin"); !bytes.Equal(kv.Value, value) {
		t.Fatalf("binary value changed: got %x", kv.Value)
	}
	if _, err := s.Put(ctx(t), p+"empty", nil, store.Any); err != nil {
		t.Fatal(err)
	}
	if kv := mustGet(t, s, p+"empty"); len(kv.Value) != 0 {
		t.Fatalf("empty value read back as %q", kv.Value)
	}
	// The store must not alias the caller's slice.
	value[0] = 0xff
	if kv := mustGet(t, s, p+"bin"); kv.Value[0] != 0 {
		t.Fatal("store kept a reference to the caller's slice")
	}
}

func testLargeValue(t *testing.T, s store.Store, p string) {
	value := make([]byte, 1<<20)
	rand.Read(value)
	rev, err := s.Put(ctx(t), p+"large", value, 0)
	if err != nil {
		t.Fatal(err)
	}
	kv := mustGet(t, s, p+"large")
	if !bytes.Equal(kv.Value, value) || kv.Revision != rev {
		t.Fatalf("1 MiB value read back as %d bytes at rev %d (want rev %d)", len(kv.Value), kv.Revision, rev)
	}
}

// testValueOwnedByCaller checks a value read stays intact while the store
// keeps writing (a backend must not hand out its internal buffers).
func testValueOwnedByCaller(t *testing.T, s store.Store, p string) {
	want := bytes.Repeat([]byte("original"), 512)
	mustPut(t, s, p+"k", string(want), store.Any)
	kv := mustGet(t, s, p+"k")
	list, err := s.List(ctx(t), p)
	if err != nil || len(list) != 1 {
		t.Fatalf("List = %d keys, %v", len(list), err)
	}
	filler := bytes.Repeat([]byte{'x'}, 64<<10)
	for i := range 200 {
		mustPut(t, s, p+"k", strconv.Itoa(i), store.Any)
		mustPut(t, s, p+"fill/"+strconv.Itoa(i%20), string(filler), store.Any)
	}
	if !bytes.Equal(kv.Value, want) {
		t.Fatal("value returned by Get changed under later writes")
	}
	if !bytes.Equal(list[0].Value, want) {
		t.Fatal("value returned by List changed under later writes")
	}
}

func testCanceledContext(t *testing.T, s store.Store, p string) {
	c, cancel := context.WithCancel(ctx(t))
	cancel()
	if _, err := s.Put(c, p+"k", []byte("v"), store.Any); err == nil {
		t.Fatal("Put with canceled ctx succeeded")
	}
	if _, err := s.Get(c, p+"k"); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get with canceled ctx error = %v, want a ctx error", err)
	}
	if _, err := s.Get(ctx(t), p+"k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Put with canceled ctx wrote the key: Get error = %v", err)
	}
}

// testPutAll writes more keys than one etcd transaction takes, over
// existing and new keys, and watchers see every write.
func testPutAll(t *testing.T, s store.Store, p string) {
	if _, ok := s.(store.Batcher); !ok {
		t.Fatal("backend does not write batches (store.Batcher)")
	}
	mustPut(t, s, p+"k000", "old", store.Any)
	ch, err := s.Watch(ctx(t), p)
	if err != nil {
		t.Fatal(err)
	}
	var kvs []store.KV
	for i := range store.MaxBatch + 2 {
		kvs = append(kvs, store.KV{Key: fmt.Sprintf("%sk%03d", p, i), Value: []byte(fmt.Sprint(i))})
	}
	if err := store.PutAll(ctx(t), s, kvs); err != nil {
		t.Fatal(err)
	}
	got, err := s.List(ctx(t), p)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(kvs) || string(got[0].Value) != "0" || string(got[len(got)-1].Value) != fmt.Sprint(len(kvs)-1) {
		t.Fatalf("after PutAll: %d keys, first %q", len(got), got[0].Value)
	}
	for range kvs {
		if ev := next(t, ch); ev.Type != store.EventPut {
			t.Fatalf("event %+v, want a put", ev)
		}
	}
}

func testClosed(t *testing.T, s store.Store, p string) {
	mustPut(t, s, p+"k", "v", store.Any)
	wctx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	ch, err := s.Watch(wctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	c := ctx(t)
	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close error = %v, want ErrClosed", op, err)
		}
	}
	_, err = s.Get(c, p+"k")
	check("Get", err)
	_, err = s.Put(c, p+"k", []byte("v"), store.Any)
	check("Put", err)
	check("Delete", s.Delete(c, p+"k", store.Any))
	_, err = s.List(c, p)
	check("List", err)
	_, err = s.Watch(c, p)
	check("Watch", err)
	if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
		t.Errorf("second Close error = %v, want nil or ErrClosed", err)
	}
	deadline := time.After(wait)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("watch channel not closed by Close")
		}
	}
}

// BenchPut measures unconditional Puts of a 256-byte value over 1000 keys.
func BenchPut(b *testing.B, s store.Store) {
	p := Prefix()
	value := make([]byte, 256)
	i := 0
	for b.Loop() {
		if _, err := s.Put(b.Context(), p+strconv.Itoa(i%1000), value, store.Any); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchGet measures Gets of a 256-byte value among 1000 keys.
func BenchGet(b *testing.B, s store.Store) {
	p := Prefix()
	value := make([]byte, 256)
	for i := range 1000 {
		if _, err := s.Put(b.Context(), p+strconv.Itoa(i), value, store.Any); err != nil {
			b.Fatal(err)
		}
	}
	i := 0
	for b.Loop() {
		if _, err := s.Get(b.Context(), p+strconv.Itoa(i%1000)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchCASUpdate measures compare-and-set updates of one key by one writer
// (each Put carries the revision returned by the previous one).
func BenchCASUpdate(b *testing.B, s store.Store) {
	key := Prefix() + "k"
	value := make([]byte, 256)
	rev, err := s.Put(b.Context(), key, value, 0)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if rev, err = s.Put(b.Context(), key, value, rev); err != nil {
			b.Fatal(err)
		}
	}
}
