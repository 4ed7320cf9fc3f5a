package probe

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/workload"
)

// server is an http server on 127.0.0.1 answering status on every path
// but /slow, which answers after the client gave up.
func server(t *testing.T, status int) (host string, port int) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-r.Context().Done()
			return
		}
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "http://127.0.0.1:1/elsewhere", http.StatusFound)
			return
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return hostPort(t, srv.Listener.Addr())
}

func hostPort(t testing.TB, a net.Addr) (string, int) {
	h, p, err := net.SplitHostPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return h, n
}

// acceptor listens on 127.0.0.1, accepting and closing every connection
// until it is closed.
func acceptor(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close() })
	return l
}

// closedPort is a port on 127.0.0.1 nothing listens on.
func closedPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port := hostPort(t, l.Addr())
	l.Close()
	return port
}

func httpProbe(port int, path string) Probe {
	return Probe{Kind: Readiness, Spec: workload.Probe{HTTP: &workload.HTTPProbe{Port: port, Path: path}}}
}

func TestCheckHTTP(t *testing.T) {
	host, ok := server(t, 204)
	_, bad := server(t, 503)
	closed := closedPort(t)
	for _, tc := range []struct {
		name    string
		host    string
		probe   Probe
		wantErr string // "" passes
	}{
		{"2xx passes", host, httpProbe(ok, "/healthz"), ""},
		{"path without slash", host, httpProbe(ok, "healthz"), ""},
		{"3xx passes, not followed", host, httpProbe(ok, "/redirect"), ""},
		{"5xx fails", host, httpProbe(bad, "/"), "status 503"},
		{"refused", host, httpProbe(closed, "/"), "connection refused"},
		{"timeout", host, httpProbe(ok, "/slow"), "timed out"},
		{"no address", "", httpProbe(ok, "/"), "no address"},
		{"bad port", host, httpProbe(0, "/"), "invalid port 0"},
		{"huge port", host, httpProbe(70000, "/"), "invalid port 70000"},
		{"bad path", host, httpProbe(ok, "/%zz"), "http GET"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			err := newChecker().check(ctx, tc.probe, tc.host, nil)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("check failed: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("check error %v, want one with %q", err, tc.wantErr)
			}
		})
	}
}

func TestCheckTCP(t *testing.T) {
	l := acceptor(t)
	defer l.Close()
	host, port := hostPort(t, l.Addr())
	tcp := func(p int) Probe {
		return Probe{Kind: Liveness, Spec: workload.Probe{TCP: &workload.TCPProbe{Port: p}}}
	}
	c := newChecker()
	if err := c.check(context.Background(), tcp(port), host, nil); err != nil {
		t.Errorf("open port: %v", err)
	}
	if err := c.check(context.Background(), tcp(closedPort(t)), host, nil); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("closed port: %v", err)
	}
	if err := c.check(context.Background(), tcp(-1), host, nil); err == nil {
		t.Error("negative port passed")
	}
}

func TestCheckExec(t *testing.T) {
	var got []string
	var gotCtr string
	exec := func(_ context.Context, ctr string, cmd []string) (int, string, error) {
		gotCtr, got = ctr, cmd
		switch cmd[0] {
		case "ok":
			return 0, "", nil
		case "broken":
			return 0, "", errors.New("runc: container not running")
		}
		return 2, "not\x1bhealthy\n", nil
	}
	probe := func(cmd ...string) Probe {
		return Probe{Kind: Liveness, Container: "web", Spec: workload.Probe{Exec: &workload.ExecProbe{Command: cmd}}}
	}
	c := newChecker()
	if err := c.check(context.Background(), probe("ok", "-x"), "10.0.0.1", exec); err != nil || gotCtr != "web" || strings.Join(got, " ") != "ok -x" {
		t.Errorf("exec ok: %v (ran %v in %q)", err, got, gotCtr)
	}
	if err := c.check(context.Background(), probe("bad"), "", exec); err == nil || err.Error() != "exec bad: exit code 2: not healthy" {
		t.Errorf("exec bad: %v", err)
	}
	if err := c.check(context.Background(), probe("broken"), "", exec); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("exec broken: %v", err)
	}
	if err := c.check(context.Background(), probe(), "", exec); err == nil {
		t.Error("empty command passed")
	}
	if err := c.check(context.Background(), probe("ok"), "", nil); !errors.Is(err, errNoExec) {
		t.Errorf("exec without execer: %v", err)
	}
	if err := c.check(context.Background(), Probe{}, "h", nil); err == nil {
		t.Error("probe without check passed")
	}
}
