package controller

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/pki"
	"github.com/rik-org/rik/internal/store/bolt"
)

// running is a controller served by Run on loopback.
type running struct {
	s      *Server
	sched  *fakeScheduler
	url    string
	addr   string
	token  string       // the first admin token ("" when insecure)
	client *http.Client // trusts the test CA when TLS is on
	caPEM  []byte
}

// testTLS issues a serving certificate for 127.0.0.1 from a new CA and
// returns the server's TLS configuration and the CA certificate.
func testTLS(t testing.TB) (*tls.Config, []byte) {
	t.Helper()
	ca, err := pki.Init(filepath.Join(t.TempDir(), "pki"), "test CA")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(pki.Template{Role: pki.RoleController, Name: "controller",
		DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, ca.CertPEM
}

// runController starts Run with a bolt store, a fake scheduler, TLS when
// withTLS, and what tune sets; it returns once /healthz answers.
func runController(t testing.TB, withTLS bool, tune func(*Config)) *running {
	t.Helper()
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	sched := startFakeScheduler(t, "127.0.0.1:0")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Listener: ln, Store: st, SchedulerAddr: sched.addr, Logger: testLogger(t),
		AdminTokenFile: filepath.Join(t.TempDir(), "admin.token")}
	r := &running{sched: sched, addr: ln.Addr().String(), url: "http://" + ln.Addr().String(), client: &http.Client{Timeout: 10 * time.Second}}
	if withTLS {
		cfg.TLS, r.caPEM = testTLS(t)
		pool, err := pki.Pool(r.caPEM)
		if err != nil {
			t.Fatal(err)
		}
		r.url = "https://" + r.addr
		r.client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	}
	if tune != nil {
		tune(&cfg)
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.s = s
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	eventually(t, "controller serving", func() bool {
		resp, err := r.client.Get(r.url + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	if !cfg.Insecure {
		b, err := os.ReadFile(cfg.AdminTokenFile)
		if err != nil {
			t.Fatal(err)
		}
		r.token = strings.TrimSpace(string(b))
	}
	return r
}

func (r *running) get(t *testing.T, path, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", r.url+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRunHTTPSWithTokens(t *testing.T) {
	r := runController(t, true, nil)
	if code, body := r.get(t, "/api/v0/workloads.list", r.token); code != 200 || body != "[]\n" {
		t.Errorf("admin list over HTTPS: %d %s", code, body)
	}
	if code, _ := r.get(t, "/api/v0/workloads.list", ""); code != 401 {
		t.Errorf("no token over HTTPS: %d", code)
	}
	eventually(t, "readyz 200 once the scheduler link is up", func() bool {
		code, body := r.get(t, "/readyz", "")
		return code == 200 && strings.Contains(body, `"ready"`)
	})
	// Plain HTTP on the HTTPS port gets nothing of the API.
	resp, err := http.Get("http://" + r.addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("plain HTTP to the HTTPS port: %s", resp.Status)
	}
	// A client that does not trust the CA cannot talk to it.
	if _, err := http.Get(r.url + "/healthz"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusting client: %v", err)
	}
}

func TestReadyzFollowsSchedulerLink(t *testing.T) {
	r := runController(t, false, nil)
	r.sched.stop()
	eventually(t, "readyz 503 with the scheduler down", func() bool {
		code, body := r.get(t, "/readyz", "")
		return code == 503 && strings.Contains(body, `"disconnected"`)
	})
	if code, _ := r.get(t, "/healthz", ""); code != 200 {
		t.Errorf("healthz with the scheduler down: %d", code)
	}
}

// A client sending its body one byte at a time is answered 408 and cut
// off once ReadTimeout has passed, long before its body is complete: over
// HTTP/1.1 (a raw TLS connection) and HTTP/2.
func TestSlowBodyIsCutOff(t *testing.T) {
	const readTimeout = time.Second
	const bodyLen = 1000 // at one byte per 100 ms: 100 s
	r := runController(t, true, func(c *Config) { c.ReadTimeout = readTimeout })
	t.Run("http1", func(t *testing.T) {
		pool, _ := pki.Pool(r.caPEM)
		conn, err := tls.Dial("tcp", r.addr, &tls.Config{RootCAs: pool})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /api/v0/workloads.create HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
			"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n", r.token, bodyLen)
		body := &slowBody{left: bodyLen, stop: make(chan struct{})}
		defer close(body.stop)
		go func() { _, _ = io.Copy(conn, body) }()
		_ = conn.SetReadDeadline(time.Now().Add(time.Minute)) // a safety net only
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("no answer to the slow body (%d bytes sent): %v", body.sent.Load(), err)
		}
		checkCutOff(t, resp, body, bodyLen)
		// The connection is closed.
		if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
			t.Errorf("read after the 408: %v, want the connection closed", err)
		}
	})
	t.Run("http2", func(t *testing.T) {
		body := &slowBody{left: bodyLen, stop: make(chan struct{})}
		defer close(body.stop)
		req, _ := http.NewRequest("POST", r.url+"/api/v0/workloads.create", body)
		req.ContentLength = bodyLen
		req.Header.Set("Authorization", "Bearer "+r.token)
		resp, err := r.client.Do(req)
		if err != nil {
			t.Fatalf("no answer to the slow body (%d bytes sent): %v", body.sent.Load(), err)
		}
		if resp.ProtoMajor != 2 {
			t.Fatalf("answered over %s", resp.Proto)
		}
		checkCutOff(t, resp, body, bodyLen)
	})
}

func checkCutOff(t *testing.T, resp *http.Response, body *slowBody, bodyLen int64) {
	t.Helper()
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), "not received in time") {
		t.Errorf("slow body answered %s %s", resp.Status, b)
	}
	if n := body.sent.Load(); n >= bodyLen {
		t.Errorf("the whole body (%d bytes) was sent before the cut", n)
	}
}

// slowBody yields one space every 100 ms until left is 0 or stop closes.
type slowBody struct {
	left int64
	sent atomic.Int64
	stop chan struct{}
}

func (b *slowBody) Read(p []byte) (int, error) {
	if b.sent.Load() >= b.left {
		return 0, io.EOF
	}
	select {
	case <-b.stop:
		return 0, io.ErrClosedPipe
	case <-time.After(100 * time.Millisecond):
	}
	p[0] = ' '
	b.sent.Add(1)
	return 1, nil
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "reset") || strings.Contains(err.Error(), "closed"))
}

// The read and write timeouts bound the request and each write, not the
// answer: a quiet event stream outlives them and keeps delivering, over
// HTTP/1.1 and HTTP/2.
func TestStreamsOutliveTimeouts(t *testing.T) {
	const readTimeout, writeTimeout = 500 * time.Millisecond, time.Second
	r := runController(t, true, func(c *Config) { c.ReadTimeout, c.WriteTimeout = readTimeout, writeTimeout })
	post := func(path, body string) {
		req, _ := http.NewRequest("POST", r.url+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+r.token)
		resp, err := r.client.Do(req)
		if err != nil || resp.StatusCode != 201 {
			t.Fatalf("POST %s: %v %v", path, resp, err)
		}
		resp.Body.Close()
	}
	post("/api/v0/workloads.create", podDef("web"))
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			pool, _ := pki.Pool(r.caPEM)
			client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: h2}}
			req, _ := http.NewRequest("GET", r.url+"/api/v0/events", nil)
			req.Header.Set("Authorization", "Bearer "+r.token)
			resp, err := client.Do(req)
			if err != nil || resp.StatusCode != 200 || (resp.ProtoMajor == 2) != h2 {
				t.Fatalf("events: %v %v", resp, err)
			}
			defer resp.Body.Close()
			time.Sleep(writeTimeout + 4*readTimeout) // quiet, past both timeouts
			post("/api/v0/instances.create", `{"workload_id":"web"}`)
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), "data:") {
					return
				}
			}
			t.Fatalf("event stream ended before an event: %v", sc.Err())
		})
	}
}

// 300 connections from one address: past the cap they are closed at once;
// those within it are held only as long as ReadTimeout allows; closing
// them frees their slots.
func TestConnectionsCappedPerIP(t *testing.T) {
	const maxConns, total = 10, 300
	r := runController(t, false, func(c *Config) { c.MaxConnsPerIP = maxConns; c.ReadTimeout = time.Minute })
	conns := make([]net.Conn, 0, total)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range total {
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "POST /api/v0/workloads.create HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 1000\r\n\r\n{", r.token)
	}
	// Another client address is not affected: it reads the metrics.
	other := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}}
	want := fmt.Sprintf("rik_controller_http_connections_refused_total %d\n", total-maxConns)
	eventually(t, fmt.Sprintf("%d connections refused", total-maxConns), func() bool {
		req, _ := http.NewRequest("GET", r.url+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+r.token)
		resp, err := other.Do(req)
		if err != nil {
			t.Fatalf("metrics from another address: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), want)
	})
	held := 0
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			held++ // open, its request waiting for the rest of its body
		}
	}
	if held != maxConns {
		t.Errorf("%d connections held, want %d", held, maxConns)
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	eventually(t, "slots freed: a new client is served", func() bool {
		resp, err := r.client.Get(r.url + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}
