package errdefs

import (
	"errors"
	"io"
	"testing"
)

func TestErrorf(t *testing.T) {
	err := Errorf(ErrResourceExhausted, "quota exceeded: %d instances exist", 3)
	if err.Error() != "quota exceeded: 3 instances exist" || !errors.Is(err, ErrResourceExhausted) || HTTPStatus(err) != 429 {
		t.Errorf("Errorf = %q (status %d)", err, HTTPStatus(err))
	}
	wrapped := Errorf(ErrInvalidArgument, "reading body: %w", io.ErrUnexpectedEOF)
	if wrapped.Error() != "reading body: unexpected EOF" || !errors.Is(wrapped, io.ErrUnexpectedEOF) || !errors.Is(wrapped, ErrInvalidArgument) {
		t.Errorf("Errorf with %%w = %q", wrapped)
	}
	if errors.Is(err, ErrNotFound) {
		t.Error("Errorf is another kind too")
	}
}
