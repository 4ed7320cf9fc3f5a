package errdefs

import "fmt"

// Errorf formats an error like fmt.Errorf (%w included) that is also
// kind, one of the domain errors above, without kind's text in its
// message: Errorf(ErrInvalidArgument, "id: required") reads "id: required"
// and maps to 400.
func Errorf(kind error, format string, args ...any) error {
	return &kindError{err: fmt.Errorf(format, args...), kind: kind}
}

// kindError is an error of a domain kind with its own message.
type kindError struct {
	err  error
	kind error
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.err, e.kind} }
