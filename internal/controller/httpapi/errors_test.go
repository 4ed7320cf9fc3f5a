package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rik-org/rik/internal/errdefs"
	"github.com/rik-org/rik/internal/workload"
)

// fail is the one mapping of errors to answers: the domain error's status
// with its message; 500 without the details for anything else.
func TestFail(t *testing.T) {
	_, invalidDef := workload.Parse([]byte(`{"kind":"Pod","name":"x","spec":{"containers":[{"name":"c"}]}}`))
	for _, tc := range []struct {
		err  error
		code int
		body string // "": none
	}{
		{errdefs.Errorf(errdefs.ErrInvalidArgument, "id: required"), 400, "id: required"},
		{errdefs.Errorf(errdefs.ErrInvalidArgument, "%w", invalidDef), 400, invalidDef.Error()},
		{fmt.Errorf("workload %q: %w", "web", errdefs.ErrNotFound), 404, `workload \"web\": not found`},
		{errdefs.Errorf(errdefs.ErrAlreadyExists, "workload %q: name already taken", "web"), 409, "name already taken"},
		{errdefs.Errorf(errdefs.ErrFailedPrecondition, "cannot delete the last admin token"), 409, "last admin token"},
		{errdefs.Errorf(errdefs.ErrTooLarge, "request body larger than 10 bytes"), 413, "larger than 10 bytes"},
		{errdefs.Errorf(errdefs.ErrResourceExhausted, "quota exceeded: 3 instances exist"), 429, "quota exceeded"},
		{errdefs.Errorf(errdefs.ErrUnavailable, "scheduler unreachable"), 503, "scheduler unreachable"},
		{errBodyTimeout, 408, "not received in time"},
		{errors.New("disk on fire at /var/lib/rik"), 500, `"internal error"`},
		{fmt.Errorf("reading: %w", context.DeadlineExceeded), 500, `"internal error"`},
		{fmt.Errorf("request: %w", context.Canceled), 200, ""}, // nothing written: the client is gone
	} {
		rec := httptest.NewRecorder()
		testAPI(nil).fail(rec, httptest.NewRequest("GET", "/x", nil), tc.err)
		body := rec.Body.String()
		if rec.Code != tc.code || (tc.body == "") != (body == "") || !strings.Contains(body, tc.body) {
			t.Errorf("fail(%v) = %d %s, want %d with %q", tc.err, rec.Code, body, tc.code, tc.body)
		}
		if tc.body != "" && rec.Header().Get("Content-Type") != "application/json" {
			t.Errorf("fail(%v): content type %q", tc.err, rec.Header().Get("Content-Type"))
		}
		if tc.code == http.StatusRequestTimeout && rec.Header().Get("Connection") != "close" {
			t.Errorf("408 without Connection: close")
		}
	}
}
