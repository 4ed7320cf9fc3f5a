package bolt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestOpenCreatesDirectory(t *testing.T) {
	for _, suffix := range []string{"", "/"} {
		dir := filepath.Join(t.TempDir(), "var", "lib", "rik", "data") + suffix
		s, err := Open(dir)
		if err != nil {
			t.Fatalf("Open(%q): %v", dir, err)
		}
		s.Close()
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("directory mode %v, want 0700", fi.Mode().Perm())
		}
		if _, err := os.Stat(filepath.Join(dir, "rik.db")); err != nil {
			t.Errorf("database file: %v", err)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(""); err == nil {
		t.Error("Open(\"\") succeeded")
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(file)
	if err == nil || !strings.Contains(err.Error(), "opening store "+file) {
		t.Errorf("Open(a file) error = %v, want one naming the path", err)
	}
}

func TestPersistence(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	rev1, err := s.Put(ctx, "/a", []byte("1"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "/a", store.Any); err != nil {
		t.Fatal(err)
	}
	rev2, err := s.Put(ctx, "/b", []byte("2"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(dir + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	kv, err := s.Get(ctx, "/b")
	if err != nil || string(kv.Value) != "2" || kv.Revision != rev2 {
		t.Fatalf("after reopen Get = %+v, %v; want value 2 rev %d", kv, err, rev2)
	}
	if _, err := s.Get(ctx, "/a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted key back after reopen: %v", err)
	}
	rev3, err := s.Put(ctx, "/c", []byte("3"), 0)
	if err != nil {
		t.Fatal(err)
	}
	// rev1, the delete, rev2: the next write is rev2+1 whatever was deleted.
	if rev1 >= rev2 || rev3 != rev2+1 {
		t.Fatalf("revisions %d, %d, then %d after reopen; want growing from %d", rev1, rev2, rev3, rev2)
	}
}

func TestLockedByAnotherProcess(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// flock(2) locks belong to the open file, so a second Open in the same
	// process contends like another process would.
	start := time.Now()
	_, err = Open(dir)
	want := "opening store " + filepath.Join(dir, "rik.db") + ": locked by another process"
	if err == nil || err.Error() != want {
		t.Fatalf("second Open error = %v, want %q", err, want)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("second Open took %v", d)
	}
}

// TestMain doubles as the helper process of TestLockedBySubprocess: with
// RIK_BOLT_HOLD_DIR set, it holds that store open until its stdin closes.
func TestMain(m *testing.M) {
	if dir := os.Getenv("RIK_BOLT_HOLD_DIR"); dir != "" {
		s, err := Open(dir)
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println("ready")
		io.Copy(io.Discard, os.Stdin)
		s.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestLockedBySubprocess(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.CommandContext(t.Context(), os.Args[0])
	cmd.Env = append(os.Environ(), "RIK_BOLT_HOLD_DIR="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		stdin.Close()
		cmd.Wait()
		t.Fatalf("helper process: %q, %v", line, err)
	}
	_, err = Open(dir)
	want := "opening store " + filepath.Join(dir, "rik.db") + ": locked by another process"
	if err == nil || err.Error() != want {
		t.Errorf("Open while another process holds the store: error = %v, want %q", err, want)
	}
	stdin.Close()
	io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper process: %v", err)
	}
	// Once the other process is gone the store opens.
	s, err := Open(dir)
	if err != nil {
		t.Fatalf("Open after the other process exited: %v", err)
	}
	s.Close()
}

func TestWatchOverflowClosesWithoutBlocking(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.buffer = 4
	ctx := t.Context()
	slow, err := s.Watch(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.Watch(ctx, "/other/")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() {
		for range 10 {
			if _, err := s.Put(ctx, "/k", []byte("v"), store.Any); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Put blocked on a slow watcher")
	}
	var got int
	for range slow {
		got++
	}
	if got != 4 {
		t.Fatalf("slow watcher got %d events before close, want its buffer (4)", got)
	}
	// A watcher of another prefix is untouched.
	if _, err := s.Put(ctx, "/other/x", nil, store.Any); err != nil {
		t.Fatal(err)
	}
	select {
	case ev, ok := <-other:
		if !ok || ev.KV.Key != "/other/x" {
			t.Fatalf("other watcher: %+v, open %v", ev, ok)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("other watcher got nothing")
	}
}

func TestKeyErrors(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if _, err := s.Put(ctx, "", []byte("v"), store.Any); err == nil {
		t.Error("Put with empty key succeeded")
	}
	if _, err := s.Put(ctx, strings.Repeat("k", 40000), []byte("v"), store.Any); err == nil {
		t.Error("Put with a 40000-byte key succeeded")
	}
	if _, err := s.Get(ctx, ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get(\"\") error = %v, want ErrNotFound", err)
	}
}

func openBench(b *testing.B) *Store {
	s, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func BenchmarkPut(b *testing.B)       { storetest.BenchPut(b, openBench(b)) }
func BenchmarkGet(b *testing.B)       { storetest.BenchGet(b, openBench(b)) }
func BenchmarkCASUpdate(b *testing.B) { storetest.BenchCASUpdate(b, openBench(b)) }
