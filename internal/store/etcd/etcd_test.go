package etcd

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/store/etcd/etcdtest"
	"github.com/rik-org/rik/internal/store/storetest"
)

func open(t testing.TB, endpoint string) *Store {
	t.Helper()
	s, err := Open(t.Context(), []string{endpoint})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	endpoint := etcdtest.Start(t)
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, endpoint) })
}

func TestOpenUnreachable(t *testing.T) {
	// Nothing listens on port 1 of the loopback address.
	start := time.Now()
	_, err := Open(t.Context(), []string{"127.0.0.1:1"})
	if err == nil {
		t.Fatal("Open of an unreachable endpoint succeeded")
	}
	if !strings.Contains(err.Error(), "connecting to etcd 127.0.0.1:1: unreachable") {
		t.Fatalf("error %q does not say the endpoint is unreachable", err)
	}
	if d := time.Since(start); d > DialTimeout+5*time.Second {
		t.Fatalf("Open took %v, want about %v", d, DialTimeout)
	}
}

func TestOpenCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := Open(ctx, []string{"127.0.0.1:1"}); err == nil {
		t.Fatal("Open with a canceled ctx succeeded")
	}
	if _, err := Open(t.Context(), nil); err == nil {
		t.Fatal("Open without endpoints succeeded")
	}
}

func TestTwoClientsSeeEachOther(t *testing.T) {
	endpoint := etcdtest.Start(t)
	a, b := open(t, endpoint), open(t, endpoint)
	defer a.Close()
	defer b.Close()
	ctx := t.Context()
	ch, err := b.Watch(ctx, "/workload/")
	if err != nil {
		t.Fatal(err)
	}
	rev, err := a.Put(ctx, "/workload/pods/default/web", []byte("x"), 0)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-ch:
		if ev.Type != store.EventPut || ev.KV.Revision != rev {
			t.Fatalf("event %+v, want put at %d", ev, rev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event on the second client")
	}
	if _, err := b.Put(ctx, "/workload/pods/default/web", []byte("y"), 0); err == nil {
		t.Fatal("second create of the same key from another client succeeded")
	}
}

func openBench(b *testing.B) *Store {
	s := open(b, etcdtest.Start(b))
	b.Cleanup(func() { s.Close() })
	return s
}

func BenchmarkPut(b *testing.B)       { storetest.BenchPut(b, openBench(b)) }
func BenchmarkGet(b *testing.B)       { storetest.BenchGet(b, openBench(b)) }
func BenchmarkCASUpdate(b *testing.B) { storetest.BenchCASUpdate(b, openBench(b)) }
