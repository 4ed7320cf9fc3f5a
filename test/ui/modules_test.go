package ui_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/rik-org/rik/internal/ui"
)

// modulePage serves the dashboard's files and, at /, an empty page of the
// same origin to import them from.
func modulePage(t *testing.T) *browser {
	t.Helper()
	b := newBrowser(t)
	mux := http.NewServeMux()
	mux.Handle(ui.Prefix, ui.Handler())
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte("<!doctype html><title>modules</title>"))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	b.do("blank page", chromedp.Navigate(srv.URL+"/"))
	return b
}

// eval runs an async JavaScript function body and decodes what it returns
// (JSON) into out.
func (b *browser) eval(body string, out any) {
	b.t.Helper()
	s := run(b, "evaluating", chromedp.Evaluate[string](`(async () => JSON.stringify(await (async () => {`+body+`})()))()`, chromedp.EvalAwaitPromise))
	if err := json.Unmarshal([]byte(s), out); err != nil {
		b.t.Fatalf("decoding %q: %v", s, err)
	}
}

type sseEvent struct {
	Event string `json:"event"`
	Data  string `json:"data"`
	ID    string `json:"id"`
}

// The dashboard's pure logic, run in the browser.
func TestModules(t *testing.T) {
	b := modulePage(t)
	t.Run("SSEParser", func(t *testing.T) { testSSEParser(t, b) })
	t.Run("formats", func(t *testing.T) { testFormats(t, b) })
}

// The event stream parser, fed whole, line by line and character by
// character (with empty pieces in between).
func testSSEParser(t *testing.T, b *browser) {
	ev := func(event, data, id string) sseEvent { return sseEvent{event, data, id} }
	for _, c := range []struct {
		name string
		text string
		want []sseEvent
	}{
		{"instance event", "event: instance\ndata: {\"id\":\"a\"}\n\n", []sseEvent{ev("instance", `{"id":"a"}`, "")}},
		{"comments only", ": connected\n\n: keepalive\n\n", nil},
		{"data lines joined", "data: a\ndata: b\n\n", []sseEvent{ev("message", "a\nb", "")}},
		{"CRLF", "event: instance\r\ndata: x\r\n\r\n", []sseEvent{ev("instance", "x", "")}},
		{"CR", "data: x\r\rdata: y\r\r", []sseEvent{ev("message", "x", ""), ev("message", "y", "")}},
		{"one space taken", "data:x\n\ndata:  y\n\n", []sseEvent{ev("message", "x", ""), ev("message", " y", "")}},
		{"id kept", "id: 7\ndata: a\n\ndata: b\n\nid\ndata: c\n\n",
			[]sseEvent{ev("message", "a", "7"), ev("message", "b", "7"), ev("message", "c", "")}},
		{"type reset", "event: instance\ndata: a\n\ndata: b\n\n", []sseEvent{ev("instance", "a", ""), ev("message", "b", "")}},
		{"no data, no event", "event: instance\n\nretry: 10\n\n", nil},
		{"empty data", "data\n\n", []sseEvent{ev("message", "", "")}},
		{"unfinished event", "data: a\n\ndata: b\n", []sseEvent{ev("message", "a", "")}},
		{"utf-8", "data: é→ü\n\n", []sseEvent{ev("message", "é→ü", "")}},
	} {
		chunkings := map[string][]string{
			"whole":     {c.text},
			"lines":     strings.SplitAfter(c.text, "\n"),
			"each char": eachChar(c.text),
		}
		for how, chunks := range chunkings {
			in, _ := json.Marshal(chunks)
			var got []sseEvent
			b.eval(`const {SSEParser} = await import('/ui/sse.js');
				const out = [];
				const p = new SSEParser((e) => out.push(e));
				for (const c of `+string(in)+`) p.push(c);
				return out;`, &got)
			if diff := cmp.Diff(c.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("%s, %s: (-want +got)\n%s", c.name, how, diff)
			}
		}
	}
}

// The formatting helpers.
func testFormats(t *testing.T, b *browser) {
	var got map[string]string
	b.eval(`const d = await import('/ui/dom.js');
		const now = Date.parse('2026-01-02T00:00:00Z');
		const at = (s) => new Date(now - s * 1000).toISOString();
		return {
			age0: d.age(at(0), now), age59: d.age(at(59), now), age60: d.age(at(60), now),
			age7200: d.age(at(7200), now), age3d: d.age(at(3 * 86400 + 5), now), ageBad: d.age('nope', now),
			cpu250: d.cpu(250), cpu1000: d.cpu(1000), cpu1500: d.cpu(1500), cpu0: d.cpu(undefined),
			mem512: d.mem(512), mem1024: d.mem(1024), mem23: d.mem(24064),
		};`, &got)
	want := map[string]string{
		"age0": "0s", "age59": "59s", "age60": "1m", "age7200": "2h", "age3d": "3d", "ageBad": "",
		"cpu250": "250m", "cpu1000": "1 CPU", "cpu1500": "1.5 CPU", "cpu0": "0m",
		"mem512": "512 MiB", "mem1024": "1 GiB", "mem23": "23.5 GiB",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("formats (-want +got)\n%s", diff)
	}
}

// eachChar cuts s into characters, with an empty piece after each.
func eachChar(s string) []string {
	var out []string
	for _, r := range s {
		out = append(out, string(r), "")
	}
	return out
}
