// Package errdefs is rik's small closed set of domain errors. Domain code
// wraps one of them (fmt.Errorf("workload %q: %w", name, errdefs.ErrNotFound));
// the edges map them, in one place each: HTTPStatus for the REST API,
// ToGRPC and FromGRPC for gRPC. containerd's errdefs is the model.
package errdefs

import (
	"context"
	"errors"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The domain errors.
var (
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrConflict           = errors.New("conflict")            // a concurrent change won; try again
	ErrFailedPrecondition = errors.New("failed precondition") // not possible in the current state
	ErrUnauthenticated    = errors.New("unauthenticated")
	ErrPermissionDenied   = errors.New("permission denied")
	ErrResourceExhausted  = errors.New("resource exhausted") // a quota or a cap
	ErrTooLarge           = errors.New("too large")
	ErrUnavailable        = errors.New("unavailable") // a dependency is down; retry later
)

// kinds pairs each domain error with its HTTP status and gRPC code.
var kinds = []struct {
	err  error
	http int
	code codes.Code
}{
	{ErrInvalidArgument, http.StatusBadRequest, codes.InvalidArgument},
	{ErrNotFound, http.StatusNotFound, codes.NotFound},
	{ErrAlreadyExists, http.StatusConflict, codes.AlreadyExists},
	{ErrConflict, http.StatusConflict, codes.Aborted},
	{ErrFailedPrecondition, http.StatusConflict, codes.FailedPrecondition},
	{ErrUnauthenticated, http.StatusUnauthorized, codes.Unauthenticated},
	{ErrPermissionDenied, http.StatusForbidden, codes.PermissionDenied},
	{ErrResourceExhausted, http.StatusTooManyRequests, codes.ResourceExhausted},
	{ErrTooLarge, http.StatusRequestEntityTooLarge, codes.ResourceExhausted},
	{ErrUnavailable, http.StatusServiceUnavailable, codes.Unavailable},
}

// HTTPStatus is the HTTP status of err: the one of the domain error it
// wraps, 499 for a cancelled request, else 500.
func HTTPStatus(err error) int {
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			return k.http
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		return 499 // the client went away
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// ToGRPC turns err into a gRPC status error with the code of the domain
// error it wraps (Internal for others); a status error is kept as it is.
func ToGRPC(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			code = k.code
			break
		}
	}
	switch {
	case code != codes.Internal:
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	return status.Error(code, err.Error())
}

// FromGRPC turns a gRPC error back into an error wrapping the domain error
// of its code (its message kept); other errors are returned as they are.
func FromGRPC(err error) error {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return err
	}
	var domain error
	switch st.Code() {
	case codes.InvalidArgument, codes.OutOfRange:
		domain = ErrInvalidArgument
	case codes.NotFound:
		domain = ErrNotFound
	case codes.AlreadyExists:
		domain = ErrAlreadyExists
	case codes.Aborted:
		domain = ErrConflict
	case codes.FailedPrecondition:
		domain = ErrFailedPrecondition
	case codes.Unauthenticated:
		domain = ErrUnauthenticated
	case codes.PermissionDenied:
		domain = ErrPermissionDenied
	case codes.ResourceExhausted:
		domain = ErrResourceExhausted
	case codes.Unavailable, codes.DeadlineExceeded:
		domain = ErrUnavailable
	case codes.Canceled:
		domain = context.Canceled
	default:
		return err
	}
	return &grpcError{msg: st.Message(), domain: domain, orig: err}
}

// grpcError is a gRPC error read back: its message, and Is for both the
// domain error and the original status.
type grpcError struct {
	msg    string
	domain error
	orig   error
}

func (e *grpcError) Error() string   { return e.msg }
func (e *grpcError) Unwrap() []error { return []error{e.domain, e.orig} }
