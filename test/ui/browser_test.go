package ui_test

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/rik-org/rik/internal/testutil"
)

// chromiumPath is Debian's chromium (make deps installs it).
const chromiumPath = "/usr/bin/chromium"

// browser is a headless chromium tab, and what went wrong in it.
type browser struct {
	t     testing.TB
	ctx   context.Context
	shots string // where screenshots go

	mu     sync.Mutex
	faults []string // exceptions, console errors, CSP violations
}

func newBrowser(t testing.TB) *browser {
	t.Helper()
	testutil.RequireFile(t, chromiumPath)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox, // root, in a container
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		// Nothing but the page's own traffic on this closed network.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 720),
		// The controller's certificate comes from rik dev's own CA.
		chromedp.IgnoreCertErrors,
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	b := &browser{t: t, ctx: ctx, shots: os.Getenv("RIK_UI_SCREENSHOTS")}
	if b.shots == "" {
		b.shots = t.TempDir()
	}
	err := chromedp.Listen(ctx, func(ev any) {
		switch e := ev.(type) {
		case *cdpruntime.EventExceptionThrown:
			d := e.ExceptionDetails
			desc := ""
			if d.Exception != nil {
				desc = d.Exception.Description
			}
			b.fault(fmt.Sprintf("exception: %s %s at %s:%d", d.Text, desc, d.URL, d.LineNumber+1))
		case *cdpruntime.EventConsoleAPICalled:
			if e.Type == cdpruntime.ConsoleAPICalledTypeError {
				b.fault(fmt.Sprintf("console.error: %v", e.Args))
			}
		case *cdplog.EventEntryAdded:
			// The 401s before signing in are network errors: expected.
			if e.Entry.Level == cdplog.EntryLevelError && e.Entry.Source != cdplog.EntrySourceNetwork {
				b.fault(fmt.Sprintf("%s: %s %s", e.Entry.Source, e.Entry.Text, e.Entry.URL))
			}
		}
	})
	if err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	b.do("viewport", chromedp.EmulateViewport(1200, 760))
	return b
}

func (b *browser) fault(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.faults = append(b.faults, s)
}

// checkFaults fails the test for everything that went wrong in the page.
func (b *browser) checkFaults() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, f := range b.faults {
		b.t.Errorf("in the page: %s", f)
	}
}

// do runs steps, failing the test (with what) after 20s.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.failed(what, err)
	}
}

func (b *browser) failed(what string, err error) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	html, _ := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("body")))
	b.t.Fatalf("%s: %v\npage: %s", what, err, html)
}

// run runs one action and returns its value.
func run[T any](b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.failed(what, err)
	}
	return v
}

// until waits for a JavaScript expression to be true.
func (b *browser) until(what, expr string) {
	b.t.Helper()
	run(b, what, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(15*time.Second)))
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	return run(b, "reading "+sel, chromedp.Text(chromedp.CSS(sel)))
}

// shot saves a screenshot of the viewport as ui-<name>.png.
func (b *browser) shot(name string) {
	b.t.Helper()
	b.do("settling", chromedp.Sleep(150*time.Millisecond))
	buf := run(b, "screenshot "+name, chromedp.CaptureScreenshot())
	cfg, err := png.DecodeConfig(bytes.NewReader(buf))
	if err != nil || cfg.Width < 800 {
		b.t.Fatalf("screenshot %s: %v %+v", name, err, cfg)
	}
	if err := os.WriteFile(filepath.Join(b.shots, "ui-"+name+".png"), buf, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// firstPaint loads url in ctx (a tab) and returns the time from navigation start to the
// first contentful paint, as the page's Performance API measures it.
func firstPaint(ctx context.Context, url string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		return 0, err
	}
	ms, err := chromedp.Run(ctx, chromedp.Poll[float64](
		`(performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime`,
		chromedp.WithPollingTimeout(10*time.Second)))
	return time.Duration(ms * float64(time.Millisecond)), err
}

func js(format string, args ...any) string { return fmt.Sprintf(format, args...) }
