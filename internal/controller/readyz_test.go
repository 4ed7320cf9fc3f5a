package controller

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/testutil/promcheck"
)

// flakyStore is a store whose reads fail while down.
type flakyStore struct {
	store.Store
	down atomic.Bool
}

func (s *flakyStore) Get(ctx context.Context, key string) (store.KV, error) {
	if s.down.Load() {
		return store.KV{}, errors.New("connection refused")
	}
	return s.Store.Get(ctx, key)
}

// /readyz is 503 with the reason while the store does not answer or the
// scheduler is down, and 200 again once they are back.
func TestReadyzReasons(t *testing.T) {
	var st *flakyStore
	r := runController(t, false, func(c *Config) {
		st = &flakyStore{Store: c.Store}
		c.Store = st
	})
	ready := func(want int, reason string) func() bool {
		return func() bool {
			code, body := r.get(t, "/readyz", "")
			return code == want && strings.Contains(body, reason)
		}
	}
	eventually(t, "ready", ready(200, `"status":"ready"`))
	if code, body := r.get(t, "/metrics", r.token); code != 200 {
		t.Errorf("metrics: %d", code)
	} else {
		promcheck.Check(t, []byte(body))
	}

	st.down.Store(true)
	eventually(t, "503 with the store down", ready(503, `"reason":"store unreachable: reading /health: connection refused"`))
	st.down.Store(false)
	eventually(t, "ready with the store back", ready(200, `"status":"ready"`))

	addr := r.sched.addr
	r.sched.stop()
	eventually(t, "503 with the scheduler down", ready(503, `"reason":"scheduler link down"`))
	r.sched = startFakeScheduler(t, addr)
	eventually(t, "ready with the scheduler back", ready(200, `"scheduler":"connected"`))
}
