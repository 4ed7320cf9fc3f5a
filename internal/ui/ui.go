// Package ui is rik's web dashboard: static files embedded in the binary
// and served by the controller under /ui/. They hold no data and are served
// without a token; the page calls the REST API with the user's token (kept
// in the tab's sessionStorage) and follows the event stream.
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// Prefix is where the dashboard is mounted.
const Prefix = "/ui/"

//go:embed static
var static embed.FS

// asset is one embedded file, ready to serve.
type asset struct {
	data  []byte
	ctype string
	etag  string
}

// contentTypes are the types of the files the dashboard is made of (set
// here rather than read from the host's MIME table: modules must be served
// as JavaScript).
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// assets maps a path under Prefix ("index.html", "app.js") to its file;
// styleHash allows the style sheet, inlined in the index.
var assets, styleHash = mustLoad(static)

// ContentSecurityPolicy is what is sent with every dashboard file: scripts
// and connections only from the controller itself, no inline script, the
// one inline style sheet (by its hash), no plugin, no framing.
func ContentSecurityPolicy() string {
	return "default-src 'none'; script-src 'self'; style-src " + styleHash + "; " +
		"img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}

// styleLink is where the index loads the style sheet.
const styleLink = `<link rel="stylesheet" href="style.css">`

// mustLoad reads the embedded files, with style.css moved into the index:
// the first paint then waits for no other request. It returns the files
// and the CSP source allowing the inlined sheet.
func mustLoad(fsys fs.FS) (map[string]asset, string) {
	sub, err := fs.Sub(fsys, "static")
	if err != nil {
		panic(err)
	}
	out := map[string]asset{}
	err = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(sub, p)
		if err == nil {
			out[p] = newAsset(p, data)
		}
		return err
	})
	css, index := out["style.css"].data, out["index.html"].data
	if err != nil || len(css) == 0 || !bytes.Contains(index, []byte(styleLink)) {
		panic(fmt.Sprintf("loading the dashboard's files: %v", err)) // they are part of the binary
	}
	inlined := strings.Replace(string(index), styleLink, "<style>"+string(css)+"</style>", 1)
	out["index.html"] = newAsset("index.html", []byte(inlined))
	delete(out, "style.css")
	sum := sha256.Sum256(css)
	return out, "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

func newAsset(name string, data []byte) asset {
	sum := sha256.Sum256(data)
	ctype, ok := contentTypes[path.Ext(name)]
	if !ok {
		ctype = "application/octet-stream"
	}
	return asset{data: data, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
}

// Handler serves the dashboard's files for requests under Prefix; the
// index for Prefix itself. Pages are addressed in the URL fragment
// (/ui/#/instances/ID), so nothing else needs serving.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy())
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		name := strings.TrimPrefix(r.URL.Path, Prefix)
		if name == "" {
			name = "index.html"
		}
		a, ok := assets[name]
		if !ok {
			h.Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":"no such file in the dashboard"}` + "\n"))
			return
		}
		// Revalidated on every load (a new controller may serve new files);
		// an unchanged file costs a 304.
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", a.etag)
		h.Set("Content-Type", a.ctype)
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.data))
	})
}
