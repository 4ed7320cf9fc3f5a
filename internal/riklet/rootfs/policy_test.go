package rootfs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// testPolicy lets the format tests fetch from their temporary files and
// their servers on 127.0.0.1.
func testPolicy() FetchPolicy {
	return FetchPolicy{Dirs: []string{os.TempDir()}, AllowPrivate: true}
}

// fakeExt4 is enough of an ext4 image for Sniff: no mke2fs needed.
func fakeExt4(fill byte) []byte {
	b := make([]byte, 4096)
	for i := range b {
		b[i] = fill
	}
	b[1080], b[1081] = 0x53, 0xEF
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestCheckAddr(t *testing.T) {
	own := func() ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("fe80::1"), netip.MustParseAddr("2001:db8::5")}, nil
	}
	broken := func() ([]netip.Addr, error) { return nil, errors.New("no interfaces") }
	tests := []struct {
		addr          string
		strict, loose bool // allowed without / with AllowPrivate
	}{
		{"93.184.216.34", true, true}, {"10.0.0.6", true, true}, {"172.31.0.2", true, true}, {"192.168.1.1", true, true},
		{"2001:db8::6", true, true},
		{"127.0.0.1", false, true}, {"127.1.2.3", false, true}, {"::1", false, true}, {"::ffff:127.0.0.1", false, true},
		{"10.0.0.5", false, true}, {"2001:db8::5", false, true},
		{"169.254.169.254", false, false}, {"fe80::1", false, false}, {"fe80::1%eth0", false, false},
		{"100.100.100.200", false, false}, {"0.0.0.0", false, false}, {"::", false, false},
		{"224.0.0.251", false, false}, {"239.255.255.250", false, false}, {"ff02::fb", false, false},
	}
	for _, tt := range tests {
		a := netip.MustParseAddr(tt.addr)
		if got := (FetchPolicy{}).checkAddr(a, own) == nil; got != tt.strict {
			t.Errorf("strict: %s allowed = %v, want %v", tt.addr, got, tt.strict)
		}
		if got := (FetchPolicy{AllowPrivate: true}).checkAddr(a, own) == nil; got != tt.loose {
			t.Errorf("AllowPrivate: %s allowed = %v, want %v", tt.addr, got, tt.loose)
		}
	}
	// Without the node's addresses, only what is allowed anyway passes.
	if err := (FetchPolicy{}).checkAddr(netip.MustParseAddr("93.184.216.34"), broken); err == nil {
		t.Error("no interface list: an address was allowed without AllowPrivate")
	}
	if err := (FetchPolicy{AllowPrivate: true}).checkAddr(netip.MustParseAddr("93.184.216.34"), broken); err != nil {
		t.Errorf("no interface list with AllowPrivate: %v", err)
	}
	if err := (FetchPolicy{}).control("tcp", "not an address", nil); err == nil {
		t.Error("control accepted an unparsable address")
	}
}

// file:// only under the allowed directories, resolved inside them; the
// errors say nothing about files the user could not name.
func TestFetchFilePolicy(t *testing.T) {
	allowed, outside := t.TempDir(), t.TempDir()
	img := fakeExt4(1)
	write := func(p string, b []byte) {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(allowed, "good.ext4"), img)
	write(filepath.Join(outside, "secret"), fakeExt4(2))
	os.MkdirAll(filepath.Join(allowed, "sub"), 0o700)
	for name, target := range map[string]string{
		"to-secret.ext4":   filepath.Join(outside, "secret"),
		"to-missing.ext4":  filepath.Join(outside, "missing"),
		"to-etc.ext4":      "/etc/shadow",
		"relative.ext4":    "../" + filepath.Base(outside) + "/secret",
		"inside.ext4":      "good.ext4",
		"sub/up.ext4":      "../good.ext4",
		"sub/escape.ext4":  "../../" + filepath.Base(outside) + "/secret",
		"dangling.ext4":    "nothing-here",
		"dir-outside.ext4": outside,
	} {
		if err := os.Symlink(target, filepath.Join(allowed, name)); err != nil {
			t.Fatal(err)
		}
	}
	s, err := NewStore(t.TempDir(), 1<<20, FetchPolicy{Dirs: []string{allowed}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, name := range []string{"good.ext4", "inside.ext4", "sub/up.ext4"} {
		if _, err := s.Fetch(ctx, "file://"+filepath.Join(allowed, name), sha(img), nil); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	tests := []struct {
		url  string
		want error
		msg  string
	}{
		{"file://" + filepath.Join(outside, "secret"), ErrNotAllowed, filepath.Join(outside, "secret") + " is not under this node's rootfs directories"},
		{"file:///etc/shadow", ErrNotAllowed, "/etc/shadow is not under this node's rootfs directories"},
		{"file://" + allowed + "/../" + filepath.Base(outside) + "/secret", ErrNotAllowed, filepath.Join(outside, "secret") + " is not under"},
		{"file://" + allowed, ErrNotAllowed, allowed + " is not under"},
		{"file://otherhost" + allowed + "/good.ext4", ErrUnsupported, "a file:// URL must name an absolute path on the node"},
		// Links out of the directory: one answer, whether the target
		// exists or not, is readable or not.
		{"file://" + allowed + "/to-secret.ext4", ErrFetch, allowed + "/to-secret.ext4 cannot be opened"},
		{"file://" + allowed + "/to-missing.ext4", ErrFetch, allowed + "/to-missing.ext4 cannot be opened"},
		{"file://" + allowed + "/to-etc.ext4", ErrFetch, allowed + "/to-etc.ext4 cannot be opened"},
		{"file://" + allowed + "/relative.ext4", ErrFetch, allowed + "/relative.ext4 cannot be opened"},
		{"file://" + allowed + "/sub/escape.ext4", ErrFetch, allowed + "/sub/escape.ext4 cannot be opened"},
		{"file://" + allowed + "/dir-outside.ext4", ErrFetch, allowed + "/dir-outside.ext4 cannot be opened"},
		{"file://" + allowed + "/dangling.ext4", ErrFetch, allowed + "/dangling.ext4: no such file"},
		{"file://" + allowed + "/nope.ext4", ErrFetch, allowed + "/nope.ext4: no such file"},
		{"file://" + allowed + "/sub", ErrFetch, allowed + "/sub is not a regular file"},
	}
	for _, tt := range tests {
		_, err := s.Fetch(ctx, tt.url, "", nil)
		if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("Fetch(%s) = %v\n want %v with %q", tt.url, err, tt.want, tt.msg)
			continue
		}
		for _, leak := range []string{"secret", "shadow", "permission", "denied", "escapes", "outside"} {
			if strings.Contains(err.Error(), leak) && !strings.Contains(tt.url, leak) {
				t.Errorf("Fetch(%s) error tells %q: %v", tt.url, leak, err)
			}
		}
	}
	// The policy comes before the cache: a store that does not allow the
	// directory does not hand out what another fetched from it.
	strict, err := NewStore(s.dir, 1<<20, FetchPolicy{Dirs: []string{outside}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := strict.Fetch(ctx, "file://"+filepath.Join(allowed, "good.ext4"), sha(img), nil); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("cached image of a refused source: %v", err)
	}
	if _, err := strict.Fetch(ctx, "file://"+filepath.Join(allowed, "good.ext4"), "", nil); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("cached URL of a refused source: %v", err)
	}
}

// A wrong sha256 says so, and nothing about what the source holds.
func TestFetchChecksumMessage(t *testing.T) {
	dir := t.TempDir()
	img := fakeExt4(3)
	os.WriteFile(filepath.Join(dir, "r.ext4"), img, 0o600)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(img) }))
	defer srv.Close()
	s, err := NewStore(t.TempDir(), 1<<20, FetchPolicy{Dirs: []string{dir}, AllowPrivate: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	wrong := strings.Repeat("ab", 32)
	hex64 := regexp.MustCompile(`[0-9a-f]{64}`)
	for _, url := range []string{"file://" + dir + "/r.ext4", srv.URL + "/r.ext4"} {
		_, err := s.Fetch(context.Background(), url, wrong, nil)
		if !errors.Is(err, ErrChecksum) || err.Error() != "rootfs sha256 mismatch" {
			t.Errorf("Fetch(%s) with a wrong sha256 = %v", url, err)
		}
		if err != nil && (hex64.MatchString(err.Error()) || strings.Contains(err.Error(), sha(img))) {
			t.Errorf("the error tells a hash: %v", err)
		}
	}
}

// http(s): loopback refused unless the node allows private fetches; a
// redirect to a refused address is refused; errors do not tell open
// ports from closed ones; a slow server is cut off.
func TestFetchHTTPPolicy(t *testing.T) {
	img := fakeExt4(4)
	var target string // where /redirect sends the client
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/r.ext4":
			w.Write(img)
		case "/redirect":
			http.Redirect(w, r, target, http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	ctx := context.Background()

	strict, _ := NewStore(t.TempDir(), 1<<20, FetchPolicy{}, nil)
	_, err := strict.Fetch(ctx, srv.URL+"/r.ext4", "", nil)
	if !errors.Is(err, ErrNotAllowed) || !strings.Contains(err.Error(), "address not allowed by this node's fetch policy") {
		t.Errorf("loopback without AllowPrivate: %v", err)
	}
	_, err = strict.Fetch(ctx, "http://localhost:"+port(srv.URL)+"/r.ext4", "", nil)
	if !errors.Is(err, ErrNotAllowed) {
		t.Errorf("a name for loopback without AllowPrivate: %v", err)
	}

	s, _ := NewStore(t.TempDir(), 1<<20, FetchPolicy{AllowPrivate: true}, nil)
	if _, err := s.Fetch(ctx, srv.URL+"/r.ext4", sha(img), nil); err != nil {
		t.Errorf("loopback with AllowPrivate: %v", err)
	}
	// The dialer refuses these before connecting: no packet leaves.
	for _, to := range []string{"http://169.254.169.254/latest/meta-data/", "http://0.0.0.0:" + port(srv.URL) + "/r.ext4", "http://[fe80::1]:80/"} {
		target = to
		_, err := s.Fetch(ctx, srv.URL+"/redirect", "", nil)
		if !errors.Is(err, ErrNotAllowed) || strings.Contains(err.Error(), "169.254") || strings.Contains(err.Error(), "fe80") {
			t.Errorf("redirect to %s: %v", to, err)
		}
	}
	if _, err := s.Fetch(ctx, "http://169.254.169.254/", "", nil); !errors.Is(err, ErrNotAllowed) ||
		err.Error() != "fetching rootfs failed: not allowed: 169.254.169.254 is a link-local address" {
		t.Errorf("literal link-local: %v", err)
	}

	// Closed port, open port that is not HTTP, open port that never
	// answers: one message.
	closed := freePort(t)
	garbage := tcpServer(t, func(c net.Conn) { c.Write([]byte("SSH-2.0-OpenSSH\r\n")); c.Close() })
	done := make(chan struct{})
	defer close(done)
	silent := tcpServer(t, func(c net.Conn) { <-done; c.Close() })
	quick, _ := NewStore(t.TempDir(), 1<<20, FetchPolicy{AllowPrivate: true, Timeout: 300 * time.Millisecond}, nil)
	var msgs []string
	for _, addr := range []string{closed, garbage, silent} {
		_, err := quick.Fetch(ctx, "http://"+addr+"/r.ext4", "", nil)
		if !errors.Is(err, ErrFetch) || errors.Is(err, ErrNotAllowed) {
			t.Errorf("%s: %v", addr, err)
			continue
		}
		msgs = append(msgs, strings.ReplaceAll(err.Error(), addr, "ADDR"))
	}
	for _, m := range msgs {
		if m != "fetching rootfs failed: GET http://ADDR/r.ext4: connection failed" {
			t.Errorf("message %q tells how the connection failed", m)
		}
	}

	// A server that sends its headers, then stalls: cut off by Timeout.
	stall := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "4096")
		w.WriteHeader(http.StatusOK)
		w.Write(img[:100])
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
	}))
	defer stall.Close()
	if _, err := quick.Fetch(ctx, stall.URL+"/r.ext4", "", nil); !errors.Is(err, ErrFetch) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("stalled body: %v", err)
	}
}

func port(rawURL string) string {
	_, p, _ := net.SplitHostPort(strings.TrimPrefix(rawURL, "http://"))
	return p
}

// freePort returns 127.0.0.1:port with nothing listening.
func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// tcpServer serves each connection with handle, on 127.0.0.1.
func tcpServer(t *testing.T, handle func(net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return ln.Addr().String()
}
