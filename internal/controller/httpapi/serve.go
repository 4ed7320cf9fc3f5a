package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// What a slow or greedy client can hold of the HTTP server, by default.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultReadTimeout bounds reading one request, headers and body.
	// Answers (event streams, followed logs) are not bounded by it: the
	// HTTP server lifts the read deadline once the body is read.
	DefaultReadTimeout = 30 * time.Second
	DefaultIdleTimeout = 2 * time.Minute
	// DefaultWriteTimeout bounds writing an answer to a client that does
	// not read it: from the first byte, and again for each write of a
	// stream.
	DefaultWriteTimeout   = time.Minute
	DefaultMaxHeaderBytes = 64 << 10
	// DefaultMaxConnsPerIP caps the connections open from one client
	// address; past it a new connection is closed as soon as accepted.
	DefaultMaxConnsPerIP = 100
)

// shutdownTimeout bounds the graceful shutdown of Serve.
const shutdownTimeout = 10 * time.Second

// Serve serves the API on ln (HTTPS with cfg.TLS) until ctx is done, then
// shuts down gracefully: requests in flight finish, streams end. Past
// MaxConnsPerIP a client's new connections are closed at once.
func (a *API) Serve(ctx context.Context, ln net.Listener) error {
	if a.cfg.MaxConnsPerIP > 0 {
		ln = newPerIPListener(ln, a.cfg.MaxConnsPerIP, a.metrics.connRefused.Inc)
	}
	srv := &http.Server{
		Handler:           a.handler,
		TLSConfig:         a.cfg.TLS,
		ReadHeaderTimeout: a.cfg.ReadHeaderTimeout,
		ReadTimeout:       a.cfg.ReadTimeout,
		IdleTimeout:       a.cfg.IdleTimeout,
		MaxHeaderBytes:    a.cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
	srv.RegisterOnShutdown(a.endStreams)
	errc := make(chan error, 1)
	scheme := "http"
	if srv.TLSConfig != nil {
		scheme = "https"
		go func() { errc <- srv.ServeTLS(ln, "", "") }()
	} else {
		go func() { errc <- srv.Serve(ln) }()
	}
	a.log.Info("controller listening", "addr", ln.Addr().String(), "scheme", scheme, "tokens", !a.cfg.Insecure)

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("serving http: %w", err)
	}
	shutCtx, stop := context.WithTimeout(context.Background(), shutdownTimeout)
	defer stop()
	if serr := srv.Shutdown(shutCtx); serr != nil {
		a.log.Warn("http shutdown", "err", serr)
	}
	return err
}

// extendWrite gives the next write to a client WriteTimeout from now; a
// client that stops reading is cut off then.
func (a *API) extendWrite(rc *http.ResponseController) {
	_ = rc.SetWriteDeadline(time.Now().Add(a.cfg.WriteTimeout)) // unsupported under httptest.ResponseRecorder
}

// writeChunk writes one piece of a stream (events, a followed log) and
// flushes it within WriteTimeout; between pieces a quiet stream has no
// deadline (over HTTP/2 a passed deadline resets the stream).
func (a *API) writeChunk(w http.ResponseWriter, rc *http.ResponseController, b []byte) error {
	a.extendWrite(rc)
	defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()
	if len(b) > 0 {
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

// perIPListener accepts at most max open connections from one client IP
// address; past that, it closes new ones at once (the client sees the
// connection closed before any answer). It sits under TLS, so a refused
// client costs no handshake.
type perIPListener struct {
	net.Listener
	max      int
	refused  atomic.Int64
	onRefuse func()

	mu   sync.Mutex
	open map[string]int
}

func newPerIPListener(ln net.Listener, max int, onRefuse func()) *perIPListener {
	return &perIPListener{Listener: ln, max: max, open: map[string]int{}, onRefuse: onRefuse}
}

func (l *perIPListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		if l.acquire(ip) {
			return &countedConn{Conn: c, release: sync.OnceFunc(func() { l.release(ip) })}, nil
		}
		l.refused.Add(1)
		if l.onRefuse != nil {
			l.onRefuse()
		}
		_ = c.Close()
	}
}

func (l *perIPListener) acquire(ip string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[ip] >= l.max {
		return false
	}
	l.open[ip]++
	return true
}

func (l *perIPListener) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[ip]--; l.open[ip] <= 0 {
		delete(l.open, ip)
	}
}

// openFrom is the number of connections open from ip.
func (l *perIPListener) openFrom(ip string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open[ip]
}

func remoteIP(c net.Conn) string {
	addr := c.RemoteAddr().String()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// countedConn gives its slot back when closed.
type countedConn struct {
	net.Conn
	release func()
}

func (c *countedConn) Close() error {
	c.release()
	return c.Conn.Close()
}
