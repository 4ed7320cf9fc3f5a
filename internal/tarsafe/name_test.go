package tarsafe

import (
	"errors"
	"testing"
)

func TestCleanName(t *testing.T) {
	tests := []struct {
		in, want string
		err      error
	}{
		{"a/b", "a/b", nil},
		{"/a//b/", "a/b", nil},
		{"./a/./b", "a/b", nil},
		{"./", "", nil},
		{"/", "", nil},
		{"..", "", ErrUnsafe},
		{"a/../b", "", ErrUnsafe},
		{"a/..", "", ErrUnsafe},
		{"a\x00b", "", ErrUnsafe},
		{string(make([]byte, MaxPathLen+1)), "", ErrInvalid},
	}
	for _, tt := range tests {
		got, err := cleanName(tt.in)
		if got != tt.want || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
			t.Errorf("cleanName(%q) = %q, %v; want %q, %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		base   string
		kind   whiteoutKind
		hidden string
		err    error
	}{
		{"file", notWhiteout, "", nil},
		{".wh.file", whiteoutFile, "file", nil},
		{".wh..wh..opq", whiteoutDir, "", nil},
		{".wh..wh.plnk", whiteoutFile, ".wh.plnk", nil},
		{".wh..hidden", whiteoutFile, ".hidden", nil},
		{".wh.", 0, "", ErrUnsafe},
		{".wh..", 0, "", ErrUnsafe},
		{".wh...", 0, "", ErrUnsafe},
	}
	for _, tt := range tests {
		k, h, err := classify(tt.base)
		if k != tt.kind || h != tt.hidden || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
			t.Errorf("classify(%q) = %v, %q, %v", tt.base, k, h, err)
		}
	}
}
