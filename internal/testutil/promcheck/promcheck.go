// Package promcheck checks a /metrics page with Prometheus's own linter,
// `promtool check metrics` (Debian's prometheus package): names, help,
// types, units and histogram shapes.
package promcheck

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"testing"

	"github.com/rik-org/rik/internal/testutil"
)

// Check fails t unless promtool accepts the metrics page body. Without
// promtool the test is skipped, or fails in CI.
func Check(t testing.TB, body []byte) {
	t.Helper()
	testutil.RequireTool(t, "promtool")
	if err := Lint(body); err != nil {
		t.Error(err)
	}
}

// Lint runs promtool check metrics on body.
func Lint(body []byte) error {
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("promtool check metrics: %w\n%s", err, out)
	}
	return nil
}

// CheckURL fetches a /metrics page and checks it.
func CheckURL(t testing.TB, url string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d, %v", url, resp.StatusCode, err)
	}
	Check(t, body)
}
