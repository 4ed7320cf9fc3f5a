package errdefs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMappings(t *testing.T) {
	for _, tc := range []struct {
		err  error
		http int
		code codes.Code
	}{
		{fmt.Errorf("spec.containers[0].image: required: %w", ErrInvalidArgument), 400, codes.InvalidArgument},
		{fmt.Errorf("workload %q: %w", "w", ErrNotFound), 404, codes.NotFound},
		{fmt.Errorf("name w: %w", ErrAlreadyExists), 409, codes.AlreadyExists},
		{fmt.Errorf("cas: %w", ErrConflict), 409, codes.Aborted},
		{fmt.Errorf("last admin token: %w", ErrFailedPrecondition), 409, codes.FailedPrecondition},
		{ErrUnauthenticated, 401, codes.Unauthenticated},
		{ErrPermissionDenied, 403, codes.PermissionDenied},
		{fmt.Errorf("cap of 10: %w", ErrResourceExhausted), 429, codes.ResourceExhausted},
		{ErrTooLarge, 413, codes.ResourceExhausted},
		{fmt.Errorf("scheduler: %w", ErrUnavailable), 503, codes.Unavailable},
		{errors.New("disk on fire"), 500, codes.Internal},
		{context.Canceled, 499, codes.Canceled},
		{context.DeadlineExceeded, http.StatusGatewayTimeout, codes.DeadlineExceeded},
	} {
		if got := HTTPStatus(tc.err); got != tc.http {
			t.Errorf("HTTPStatus(%v) = %d, want %d", tc.err, got, tc.http)
		}
		g := ToGRPC(tc.err)
		if got := status.Code(g); got != tc.code {
			t.Errorf("ToGRPC(%v) code = %v, want %v", tc.err, got, tc.code)
		}
		if status.Convert(g).Message() != tc.err.Error() {
			t.Errorf("ToGRPC(%v) lost the message: %q", tc.err, status.Convert(g).Message())
		}
	}
	if ToGRPC(nil) != nil {
		t.Error("ToGRPC(nil) != nil")
	}
}

func TestFromGRPCRoundTrip(t *testing.T) {
	for _, domain := range []error{ErrInvalidArgument, ErrNotFound, ErrAlreadyExists, ErrConflict, ErrFailedPrecondition,
		ErrUnauthenticated, ErrPermissionDenied, ErrResourceExhausted, ErrUnavailable} {
		back := FromGRPC(ToGRPC(fmt.Errorf("thing: %w", domain)))
		if !errors.Is(back, domain) || back.Error() != "thing: "+domain.Error() {
			t.Errorf("round trip of %v = %v", domain, back)
		}
		if status.Code(back) == codes.Unknown {
			t.Errorf("round trip of %v lost the status code", domain)
		}
	}
	plain := errors.New("plain")
	if FromGRPC(plain) != plain {
		t.Error("FromGRPC changed a non-gRPC error")
	}
	internal := status.Error(codes.Internal, "boom")
	if FromGRPC(internal) != internal {
		t.Error("FromGRPC changed an Internal error")
	}
}
