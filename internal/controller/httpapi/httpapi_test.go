package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRecoverMiddleware(t *testing.T) {
	h := testAPI(nil).instrument(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") }), func(*http.Request) string { return "" })
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), `"error":"internal error"`) {
		t.Errorf("panic answered %d %s", rec.Code, rec.Body)
	}
}
