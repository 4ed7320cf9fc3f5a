package rootfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/rik-org/rik/internal/tarsafe"
)

// ErrUnsafePath: an archive entry would land outside the target directory
// or break the tree.
var ErrUnsafePath = tarsafe.ErrUnsafe

// ExtractStats counts what Extract wrote.
type ExtractStats struct {
	Files int   // entries written
	Bytes int64 // bytes of regular files
}

// Extract unpacks the tar stream r into dir (created) with tarsafe's rules:
// confined to dir (paths through symlinks resolved inside it), owners and
// modes kept, no device nodes, and at most max bytes of regular files
// (ErrTooLarge). An unreadable archive is ErrUnsupported.
func Extract(ctx context.Context, r io.Reader, dir string, max int64) (ExtractStats, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return ExtractStats{}, fmt.Errorf("creating %s: %w", dir, err)
	}
	st, err := tarsafe.Apply(ctx, dir, r, tarsafe.Options{MaxBytes: max})
	switch {
	case errors.Is(err, tarsafe.ErrTooLarge):
		err = fmt.Errorf("%w: %w", ErrTooLarge, err)
	case errors.Is(err, tarsafe.ErrInvalid):
		err = fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	return ExtractStats{Files: st.Entries, Bytes: st.Bytes}, err
}
