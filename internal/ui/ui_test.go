package ui

import (
	"crypto/sha256"
	"encoding/base64"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func get(t *testing.T, path string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	Handler().ServeHTTP(rec, req)
	return rec
}

// Every file is served with its type and the security headers; /ui/ is the
// index.
func TestServesEveryFile(t *testing.T) {
	if len(assets) < 5 {
		t.Fatalf("only %d files embedded", len(assets))
	}
	want := map[string]string{"": "text/html; charset=utf-8"}
	for name, a := range assets {
		want[name] = a.ctype
	}
	for name, ctype := range want {
		rec := get(t, Prefix+name, nil)
		if rec.Code != http.StatusOK {
			t.Errorf("%s: %d", name, rec.Code)
			continue
		}
		h := rec.Header()
		for k, v := range map[string]string{
			"Content-Type":            ctype,
			"Content-Security-Policy": ContentSecurityPolicy(),
			"X-Content-Type-Options":  "nosniff",
			"X-Frame-Options":         "DENY",
			"Cache-Control":           "no-cache",
		} {
			if got := h.Get(k); got != v {
				t.Errorf("%s: %s = %q, want %q", name, k, got, v)
			}
		}
		if h.Get("ETag") == "" || rec.Body.Len() == 0 {
			t.Errorf("%s: etag %q, %d bytes", name, h.Get("ETag"), rec.Body.Len())
		}
	}
	if !strings.Contains(get(t, Prefix, nil).Body.String(), `<script type="module" src="app.js">`) {
		t.Error("/ui/ is not the index")
	}
}

func TestCSPIsStrict(t *testing.T) {
	csp := ContentSecurityPolicy()
	for _, part := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, part+";") && !strings.HasSuffix(csp, part) {
			t.Errorf("CSP lacks %q: %s", part, csp)
		}
	}
	if strings.Contains(csp, "unsafe") || strings.Contains(csp, "*") {
		t.Errorf("CSP allows too much: %s", csp)
	}
}

// The style sheet is in the index, allowed by its hash and nothing else.
func TestStyleInlined(t *testing.T) {
	index := get(t, Prefix, nil).Body.String()
	css, err := fs.ReadFile(static, "static/style.css")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(index, "<style>"+string(css)+"</style>") || strings.Contains(index, "stylesheet") {
		t.Fatalf("index without the inlined style sheet:\n%s", index)
	}
	sum := sha256.Sum256(css)
	want := "style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "';"
	if !strings.Contains(ContentSecurityPolicy(), want) {
		t.Errorf("CSP %q lacks %q", ContentSecurityPolicy(), want)
	}
	if rec := get(t, Prefix+"style.css", nil); rec.Code != http.StatusNotFound {
		t.Errorf("style.css served apart: %d", rec.Code)
	}
}

func TestRevalidation(t *testing.T) {
	etag := get(t, Prefix+"app.js", nil).Header().Get("ETag")
	if rec := get(t, Prefix+"app.js", map[string]string{"If-None-Match": etag}); rec.Code != http.StatusNotModified {
		t.Errorf("same ETag: %d, want 304", rec.Code)
	}
	if rec := get(t, Prefix+"app.js", map[string]string{"If-None-Match": `"other"`}); rec.Code != http.StatusOK {
		t.Errorf("other ETag: %d, want 200", rec.Code)
	}
	if get(t, Prefix+"api.js", nil).Header().Get("ETag") == etag {
		t.Error("two files share an ETag")
	}
}

func TestUnknownFiles(t *testing.T) {
	for _, p := range []string{"/ui/nope.js", "/ui/static/app.js", "/ui/../ui.go", "/ui/ui.go", "/ui/index.html/"} {
		rec := get(t, p, nil)
		if rec.Code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", p, rec.Code)
		}
		if rec.Header().Get("Content-Security-Policy") == "" {
			t.Errorf("%s: no CSP on the 404", p)
		}
	}
}

var (
	refAttr   = regexp.MustCompile(`\b(?:src|href)="([^"#]+)"`)
	jsImport  = regexp.MustCompile(`(?m)^import [^;]*? from '([^']+)';`)
	inlineJS  = regexp.MustCompile(`(?i)<script(?:\s+type="module")?>|\son[a-z]+=|javascript:|\sstyle=`)
	remoteURL = regexp.MustCompile(`(?i)(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
)

// The page loads nothing it does not embed, from nowhere else, and has no
// inline script or style (the CSP would block them).
func TestFilesAreSelfContained(t *testing.T) {
	index := string(assets["index.html"].data)
	for _, m := range refAttr.FindAllStringSubmatch(index, -1) {
		if _, ok := assets[m[1]]; !ok {
			t.Errorf("index.html refers to %q, which is not embedded", m[1])
		}
	}
	if m := inlineJS.FindString(index); m != "" {
		t.Errorf("index.html has inline script or style: %q", m)
	}
	for name, a := range assets {
		text := string(a.data)
		if name == "favicon.svg" {
			text = strings.Replace(text, `xmlns="http://www.w3.org/2000/svg"`, "", 1)
		}
		if m := remoteURL.FindString(text); m != "" {
			t.Errorf("%s refers to %q: nothing may come from elsewhere", name, m)
		}
		if !strings.HasSuffix(name, ".js") {
			continue
		}
		for _, m := range jsImport.FindAllStringSubmatch(text, -1) {
			if _, ok := assets[strings.TrimPrefix(m[1], "./")]; !ok || !strings.HasPrefix(m[1], "./") {
				t.Errorf("%s imports %q, which is not embedded", name, m[1])
			}
		}
		if strings.Contains(text, "innerHTML") || strings.Contains(text, "eval(") {
			t.Errorf("%s builds HTML from strings or evaluates code", name)
		}
	}
}

// The dashboard stays small.
func TestSize(t *testing.T) {
	total := 0
	for _, a := range assets {
		total += len(a.data)
	}
	if total > 64<<10 {
		t.Errorf("the dashboard is %d bytes, over 64 KiB", total)
	}
	names, _ := fs.Glob(static, "static/*")
	if !slices.Contains(names, "static/index.html") {
		t.Errorf("embedded: %v", names)
	}
}
