package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode"
)

// Execer runs cmd in container of the probed instance and returns its exit
// code and (the start of) its output. Only pods have one.
type Execer func(ctx context.Context, container string, cmd []string) (code int, output string, err error)

// errNoExec: an exec check of an instance that has no way to run one.
var errNoExec = errors.New("exec checks run only in pods")

// checker makes the checks; one is shared by every probe of a Prober.
type checker struct {
	client *http.Client
	dialer net.Dialer
}

func newChecker() *checker {
	return &checker{client: &http.Client{
		// One connection per check, closed after it: nothing is kept
		// open to an instance between checks.
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
		// A 3xx is an answer: it is not followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// check runs one check of p against the instance at host, bounded by
// ctx; nil means it passed.
func (c *checker) check(ctx context.Context, p Probe, host string, exec Execer) error {
	switch s := p.Spec; {
	case s.HTTP != nil:
		return c.http(ctx, host, s.HTTP.Port, s.HTTP.Path)
	case s.TCP != nil:
		return c.tcp(ctx, host, s.TCP.Port)
	case s.Exec != nil:
		return execCheck(ctx, exec, p.Container, s.Exec.Command)
	}
	return errors.New("no check (http, tcp or exec)")
}

func address(host string, port int) (string, error) {
	if host == "" {
		return "", errors.New("the instance has no address")
	}
	if port < 1 || port > 65535 {
		return "", fmt.Errorf("invalid port %d", port)
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// http GETs path on host:port and wants a 2xx or 3xx status.
func (c *checker) http(ctx context.Context, host string, port int, path string) error {
	addr, err := address(host, port)
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	target := "http://" + addr + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("http GET %s: %w", printable(target), err)
	}
	req.Header.Set("User-Agent", "rik-probe/1")
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("http GET %s: %w", printable(target), unwrapURLError(err))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return fmt.Errorf("http GET %s: status %d", printable(target), resp.StatusCode)
	}
	return nil
}

// tcp wants a connection to host:port to open.
func (c *checker) tcp(ctx context.Context, host string, port int) error {
	addr, err := address(host, port)
	if err != nil {
		return fmt.Errorf("tcp: %w", err)
	}
	conn, err := c.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("tcp %s: %w", addr, unwrapOpError(err))
	}
	return conn.Close()
}

// execCheck wants cmd to exit 0 in container.
func execCheck(ctx context.Context, exec Execer, container string, cmd []string) error {
	if exec == nil {
		return errNoExec
	}
	if len(cmd) == 0 {
		return errors.New("exec: no command")
	}
	code, out, err := exec(ctx, container, cmd)
	if err != nil {
		return fmt.Errorf("exec %s: %w", printable(strings.Join(cmd, " ")), err)
	}
	if code != 0 {
		msg := fmt.Sprintf("exec %s: exit code %d", printable(strings.Join(cmd, " ")), code)
		if out = strings.TrimSpace(out); out != "" {
			msg += ": " + printable(out)
		}
		return errors.New(msg)
	}
	return nil
}

// printable bounds s and drops its control characters, for a message.
func printable(s string) string {
	const maxLen = 200
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxLen {
		s = s[:maxLen] + "..."
	}
	return s
}

// unwrapURLError drops the "Get "url": " prefix net/http adds (the
// message names the URL already).
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return unwrapOpError(ue.Err)
	}
	return err
}

// unwrapOpError keeps the cause of a dial error ("connection refused").
func unwrapOpError(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return errors.New("timed out")
	}
	return err
}
