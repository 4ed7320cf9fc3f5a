package ui_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rik-org/rik/internal/ui"
)

// BenchmarkFirstPaint measures the time from navigation start to the first
// contentful paint of the dashboard (the Performance API's figure), served
// by a real controller over HTTPS on loopback:
//
//   - first-visit: a new browser context each time (empty cache, no
//     session: the page ends on the sign-in form);
//   - reload: the same tab again (files revalidated with their ETags).
//
// It reports the median and the slowest load.
func BenchmarkFirstPaint(b *testing.B) {
	br := newBrowser(b)
	c := startCluster(b, false)
	url := c.url + "/ui/"
	// The floor: the same measure of a page of one paragraph, for what
	// the browser takes whatever the page.
	plain := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte("<!doctype html><title>rik</title><p>rik</p>"))
	}))
	b.Cleanup(plain.Close)
	b.Run("first-visit-plain-page", func(b *testing.B) { firstVisits(b, br, plain.URL+"/") })
	b.Run("first-visit", func(b *testing.B) { firstVisits(b, br, url) })
	b.Run("reload", func(b *testing.B) {
		ctx, cancel := newTab(b, br)
		defer cancel()
		if _, err := firstPaint(ctx, url); err != nil {
			b.Fatal(err)
		}
		var all []time.Duration
		for b.Loop() {
			d, err := firstPaint(ctx, url)
			if err != nil {
				b.Fatal(err)
			}
			all = append(all, d)
		}
		report(b, all)
	})
}

// BenchmarkFirstPaintFiles is BenchmarkFirstPaint's first visits without
// a cluster in the process: the dashboard's files served by ui.Handler
// over HTTPS on loopback, and the one-paragraph page, in turns. The page
// paints before any API answer (it asks for them after), so this is its
// first paint with less else competing for the CPU.
func BenchmarkFirstPaintFiles(b *testing.B) {
	br := newBrowser(b)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/plain" {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = w.Write([]byte("<!doctype html><title>rik</title><p>rik</p>"))
			return
		}
		ui.Handler().ServeHTTP(w, r)
	}))
	b.Cleanup(srv.Close)
	b.Run("plain-page", func(b *testing.B) { firstVisits(b, br, srv.URL+"/plain") })
	b.Run("dashboard", func(b *testing.B) { firstVisits(b, br, srv.URL+ui.Prefix) })
}

// firstVisits loads url, each time in a new browser context.
func firstVisits(b *testing.B, br *browser, url string) {
	var all []time.Duration
	for b.Loop() {
		ctx, cancel := newTab(b, br, chromedp.WithNewBrowserContext())
		d, err := firstPaint(ctx, url)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		all = append(all, d)
	}
	report(b, all)
}

func report(b *testing.B, all []time.Duration) {
	slices.Sort(all)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(all[len(all)/2]), "fcp-median-ms")
	b.ReportMetric(ms(all[len(all)-1]), "fcp-max-ms")
}

// newTab opens a tab in br's browser (its life is ctx's, without timeout).
func newTab(b *testing.B, br *browser, opts ...chromedp.ContextOption) (context.Context, context.CancelFunc) {
	ctx, cancel := chromedp.NewContext(br.ctx, opts...)
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		b.Fatalf("opening a tab: %v", err)
	}
	return ctx, cancel
}
