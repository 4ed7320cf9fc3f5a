package logfile

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestTailLines(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 0, "a\nb\nc\n"},
		{"a\nb\nc\n", 2, "b\nc\n"},
		{"a\nb\nc", 2, "b\nc"},
		{"a\nb\nc\n", 10, "a\nb\nc\n"},
		{"a\nb\n", 5, "a\nb\n"},
		{"", 3, ""},
		{"only\n", 1, "only\n"},
	}
	for _, tt := range tests {
		if got := string(TailLines([]byte(tt.in), tt.n)); got != tt.want {
			t.Errorf("TailLines(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

func TestCopyFrom(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	if _, err := CopyFrom(path, 3, &bytes.Buffer{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
	steps := []struct {
		content string // the file's content before the read
		off     int64
		want    string
		next    int64
	}{
		{"hello\n", 0, "hello\n", 6},
		{"hello\nworld\n", 6, "world\n", 12},
		{"hello\nworld\n", 12, "", 12},
		{"new\n", 12, "new\n", 4}, // rotated: read from the start
	}
	for _, s := range steps {
		if err := os.WriteFile(path, []byte(s.content), 0o600); err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		next, err := CopyFrom(path, s.off, &b)
		if err != nil || b.String() != s.want || next != s.next {
			t.Errorf("CopyFrom(%q, %d) = %q, %d, %v; want %q, %d", s.content, s.off, b.String(), next, err, s.want, s.next)
		}
	}
}

func TestRotate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	if err := Rotate(path, 10); err != nil {
		t.Errorf("rotating a missing log: %v", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString(strings.Repeat("x", 100) + "\n")
	if err := Rotate(path, 1000); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".1"); err == nil {
		t.Fatal("rotated below the limit")
	}
	f.WriteString(strings.Repeat("y", 1000) + "\n")
	if err := Rotate(path, 1000); err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(path + ".1")
	if len(old) != 1102 {
		t.Errorf("rotated file holds %d bytes, want 1102", len(old))
	}
	// The writer goes on at the start of the truncated file.
	f.WriteString("after\n")
	cur, _ := os.ReadFile(path)
	if !bytes.Equal(cur, []byte("after\n")) {
		t.Errorf("current log = %q", cur)
	}
	var offset int64 = 500 // a follower past the new end starts over
	var out bytes.Buffer
	if next, err := CopyFrom(path, offset, &out); err != nil || next != 6 || out.String() != "after\n" {
		t.Errorf("CopyFrom after rotation = %d %q %v", next, out.String(), err)
	}
}

func TestTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	var b bytes.Buffer
	if _, err := Tail(path, 0, &b); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Tail of a missing log: %v, want ErrNotExist", err)
	}
	os.WriteFile(path+".1", []byte("old1\nold2\n"), 0o600)
	os.WriteFile(path, []byte("new1\nnew2\n"), 0o600)
	tests := []struct {
		n    int
		want string
	}{
		{0, "old1\nold2\nnew1\nnew2\n"},
		{1, "new2\n"},
		{2, "new1\nnew2\n"},
		{3, "old2\nnew1\nnew2\n"}, // through the rotated part
		{10, "old1\nold2\nnew1\nnew2\n"},
	}
	for _, tt := range tests {
		b.Reset()
		off, err := Tail(path, tt.n, &b)
		if err != nil || b.String() != tt.want || off != 10 {
			t.Errorf("Tail(%d) = %q, %d, %v; want %q, 10", tt.n, b.String(), off, err, tt.want)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestFollow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	appendTo := func(s string) {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(s)
		f.Close()
	}
	waitFor := func(out *syncBuffer, want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for out.String() != want {
			if time.Now().After(deadline) {
				t.Fatalf("followed %q, want %q", out.String(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	var running atomic.Bool
	running.Store(true)
	out := &syncBuffer{}
	done := make(chan error, 1)
	// The log does not exist yet: followed once it does.
	go func() { done <- Follow(context.Background(), path, 0, out, running.Load) }()
	appendTo("one\n")
	waitFor(out, "one\n")
	appendTo("two\n")
	waitFor(out, "one\ntwo\n")
	// Rotated: read again from the start of the emptied log.
	appendTo(strings.Repeat("z", 20) + "\n")
	waitFor(out, "one\ntwo\n"+strings.Repeat("z", 20)+"\n")
	if err := Rotate(path, 10); err != nil {
		t.Fatal(err)
	}
	// What is written before the writer ends is read, then Follow returns.
	appendTo("last\n")
	running.Store(false)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if want := "one\ntwo\n" + strings.Repeat("z", 20) + "\nlast\n"; out.String() != want {
		t.Errorf("followed %q, want %q", out.String(), want)
	}

	// A done context ends a follow of a running writer.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Follow(ctx, path, 0, &syncBuffer{}, func() bool { return true }); err != nil {
		t.Errorf("Follow with a done context: %v", err)
	}
}
