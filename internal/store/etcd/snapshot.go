package etcd

import (
	"context"
	"fmt"
	"io"
)

// Snapshot writes a snapshot of the etcd member at endpoint ("host:port")
// to w and returns its size: etcd's own backup (Maintenance.Snapshot), a
// consistent copy of the member's whole keyspace taken while it serves.
// It is restored with `etcdutl snapshot restore` into a new data directory
// (docs/operations.md). One endpoint, as with `etcdctl snapshot save`: the
// snapshot is one member's.
func Snapshot(ctx context.Context, endpoint string, w io.Writer) (int64, error) {
	s, err := Open(ctx, []string{endpoint})
	if err != nil {
		return 0, err
	}
	defer s.Close()
	rc, err := s.cli.Snapshot(ctx)
	if err != nil {
		return 0, fmt.Errorf("snapshotting etcd %s: %w", endpoint, err)
	}
	defer rc.Close()
	n, err := io.Copy(w, rc)
	if err != nil {
		return n, fmt.Errorf("snapshotting etcd %s: %w", endpoint, err)
	}
	return n, nil
}
