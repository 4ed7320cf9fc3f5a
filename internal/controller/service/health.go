package service

import (
	"context"
	"errors"
	"fmt"

	"github.com/rik-org/rik/internal/store"
)

// healthKey is the key read to see that the store answers; it need not
// exist.
const healthKey = "/health"

// CheckStore says whether the store answers a read.
func (s *Service) CheckStore(ctx context.Context) error {
	if _, err := s.st.Get(ctx, healthKey); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("reading %s: %w", healthKey, err)
	}
	return nil
}
