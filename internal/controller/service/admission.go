package service

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/rik-org/rik/internal/errdefs"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/workload"
)

// Defaults of Admission.
const (
	DefaultMaxInstances = 10000
	DefaultMaxPending   = 1000
)

// Admission is what the controller admits besides a valid definition. It
// applies in every mode (with or without TLS and tokens).
type Admission struct {
	// Policy is applied to every definition stored (workloads.create) and
	// again to the stored definition on instances.create. The controller
	// adds its own listening port and the scheduler's to its reserved
	// ports.
	Policy workload.Policy
	// MaxInstances caps the instances of the cluster, whatever their
	// status; MaxPending caps those PENDING. 0: no cap.
	MaxInstances int
	MaxPending   int
}

// DefaultAdmission is the admission of a controller configured with
// nothing.
func DefaultAdmission() Admission {
	return Admission{Policy: workload.DefaultPolicy(), MaxInstances: DefaultMaxInstances, MaxPending: DefaultMaxPending}
}

// quotaRefresh is how long instance counts from the store are used; in
// between, the instances admitted here are added to them (deletions are
// not subtracted: the estimate errs on the high side, and a request
// refused near a cap succeeds once counted again). Counting 10,000
// instances takes tens of milliseconds (BenchmarkQuotaRecount): no more
// than once a second, however many requests come.
const quotaRefresh = time.Second

// quota is the state of the instance caps.
type quota struct {
	mu             sync.Mutex
	counted        time.Time // when total and pending were counted from the store
	total, pending int
}

// admitInstances checks that n more instances of wl may be created: wl's
// stored definition is admitted again (the policy may have changed since
// it was stored), and the caps leave room for n more
// (ErrResourceExhausted). The n instances are counted from then on.
func (s *Service) admitInstances(ctx context.Context, wl WorkloadRecord, n int) error {
	_, err := s.admit(ctx, wl, n, false)
	return err
}

// admitUpTo is admitInstances admitting as many of the n as the caps leave
// room for: it returns how many (counted from then on) and, when fewer
// than n, the cap's ErrResourceExhausted.
func (s *Service) admitUpTo(ctx context.Context, wl WorkloadRecord, n int) (int, error) {
	return s.admit(ctx, wl, n, true)
}

func (s *Service) admit(ctx context.Context, wl WorkloadRecord, n int, partial bool) (int, error) {
	if _, err := workload.Admit(wl.Value, s.cfg.Admission.Policy); err != nil {
		return 0, errdefs.Errorf(errdefs.ErrInvalidArgument, "workload %s: %w", wl.Name, err)
	}
	maxAll, maxPending := s.cfg.Admission.MaxInstances, s.cfg.Admission.MaxPending
	if maxAll <= 0 && maxPending <= 0 {
		return n, nil
	}
	q := &s.quota
	q.mu.Lock()
	defer q.mu.Unlock()
	over := func() error {
		switch {
		case maxAll > 0 && q.total+n > maxAll:
			return errdefs.Errorf(errdefs.ErrResourceExhausted, "quota exceeded: %d instances exist, %d more would pass the cluster's cap of %d instances",
				q.total, n, maxAll)
		case maxPending > 0 && q.pending+n > maxPending:
			return errdefs.Errorf(errdefs.ErrResourceExhausted, "quota exceeded: %d instances are PENDING, %d more would pass the cluster's cap of %d pending instances",
				q.pending, n, maxPending)
		}
		return nil
	}
	if since := s.now().Sub(q.counted); since >= quotaRefresh || since < 0 {
		total, pending, err := countInstances(ctx, s.st)
		if err != nil {
			return 0, err
		}
		q.total, q.pending, q.counted = total, pending, s.now()
	}
	err := over()
	if err != nil && !partial {
		return 0, err
	}
	if maxAll > 0 {
		n = min(n, maxAll-q.total)
	}
	if maxPending > 0 {
		n = min(n, maxPending-q.pending)
	}
	n = max(n, 0)
	q.total += n
	q.pending += n
	return n, err
}

// countInstances counts the instances in the store, and those PENDING.
func countInstances(ctx context.Context, st store.Store) (total, pending int, err error) {
	kvs, err := st.List(ctx, instancePrefix)
	if err != nil {
		return 0, 0, fmt.Errorf("counting instances: %w", err)
	}
	for _, kv := range kvs {
		var rec struct {
			Value struct {
				Status workload.Status `json:"status"`
			} `json:"value"`
		}
		total++
		if json.Unmarshal(kv.Value, &rec) == nil && rec.Value.Status == workload.StatusPending {
			pending++
		}
	}
	return total, pending, nil
}
