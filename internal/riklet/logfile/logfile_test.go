package logfile

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
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
