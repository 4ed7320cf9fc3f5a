package dev

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/rik-org/rik/internal/riklet"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/workload"
)

// closedRuntime is a runtime with nothing to run that records when the
// riklet closes it (the last thing the riklet does on exit).
type closedRuntime struct {
	mu     sync.Mutex
	closed bool
}

func (r *closedRuntime) Kind() workload.Kind { return workload.KindPod }
func (r *closedRuntime) Start(context.Context, runtime.Instance) (runtime.Status, error) {
	return runtime.Status{}, errors.New("not in this test")
}
func (r *closedRuntime) Stop(context.Context, runtime.Instance) error { return nil }
func (r *closedRuntime) Recover(context.Context, []runtime.Instance) ([]runtime.Status, error) {
	return nil, nil
}
func (r *closedRuntime) Logs(context.Context, runtime.Instance, runtime.LogOptions, io.Writer) error {
	return nil
}
func (r *closedRuntime) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return nil
}

func (r *closedRuntime) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// uninstallProbe is a Config.Uninstall that records its calls and what the
// node looked like at the time.
type uninstallProbe struct {
	rt           *closedRuntime
	dataDir      string
	calls        int
	rikletClosed bool
	dataDirThere bool
	ctxErr       error
}

func (p *uninstallProbe) uninstall(ctx context.Context) error {
	p.calls++
	p.rikletClosed = p.rt.isClosed()
	_, err := os.Stat(p.dataDir)
	p.dataDirThere = err == nil
	p.ctxErr = ctx.Err()
	return errors.New("left something") // only logged
}

func newProbe(dataDir string) (*uninstallProbe, []riklet.RuntimeFactory) {
	p := &uninstallProbe{rt: &closedRuntime{}, dataDir: dataDir}
	return p, []riklet.RuntimeFactory{func(context.Context, runtime.Reporter) (runtime.Runtime, error) { return p.rt, nil }}
}

// A temporary cluster removes rik's host state once the riklet is done,
// with a live context, before its data directory goes.
func TestTemporaryClusterUninstalls(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "rik-dev-tmp")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	p, rts := newProbe(dir)
	if err := runDevConfig(t, Config{DataDir: dir, Temporary: true, Runtimes: rts, Uninstall: p.uninstall}); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if p.calls != 1 || !p.rikletClosed || !p.dataDirThere || p.ctxErr != nil {
		t.Errorf("uninstall: %d calls, riklet done %v, data dir there %v, ctx err %v; want 1, true, true, nil",
			p.calls, p.rikletClosed, p.dataDirThere, p.ctxErr)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("a failed uninstall kept the data dir: %v", err)
	}
}

// A kept data directory keeps everything, the network included.
func TestKeptClusterDoesNotUninstall(t *testing.T) {
	dir := t.TempDir()
	p, rts := newProbe(dir)
	if err := runDevConfig(t, Config{DataDir: dir, Runtimes: rts, Uninstall: p.uninstall}); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if p.calls != 0 {
		t.Errorf("uninstall called %d times for a kept data dir", p.calls)
	}
}

// A riklet that failed (here: it cannot create its state dir) may have left
// instances: nothing is uninstalled.
func TestFailedRikletDoesNotUninstall(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "riklet"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	p, rts := newProbe(dir)
	err := Run(context.Background(), Config{
		DataDir: dir, Addr: "127.0.0.1:0", WorkersAddr: "127.0.0.1:0", ControllersAddr: "127.0.0.1:0",
		Hostname: "dev-node", Logger: slogDiscard(), Temporary: true, Runtimes: rts, Uninstall: p.uninstall,
	})
	if err == nil {
		t.Fatal("Run with an unusable riklet state dir: no error")
	}
	if p.calls != 0 {
		t.Errorf("uninstall called %d times after the riklet failed", p.calls)
	}
}

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }
