package rikctl

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/workload"
)

// WorkloadItem is a workload as the API shows it.
type WorkloadItem = api.Item[workload.Workload]

// InstanceItem is an instance as the API shows it.
type InstanceItem = api.Item[workload.Instance]

// LogOptions select the logs of an instance.
type LogOptions struct {
	Container string
	Follow    bool
	Tail      int // 0: all
}

// APIError is an error answered by the controller.
type APIError struct {
	StatusCode int
	Message    string // the server's {"error": ...} text
}

func (e *APIError) Error() string { return e.Message }

// UnreachableError says the controller could not be reached at all.
type UnreachableError struct {
	Server string
	Err    error
}

func (e *UnreachableError) Error() string {
	msg := fmt.Sprintf("cannot reach rik at %s: is the controller running?", e.Server)
	if !errors.Is(e.Err, syscall.ECONNREFUSED) {
		msg += " (" + e.Err.Error() + ")"
	}
	return msg
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Client talks to the controller's REST API (/api/v0).
type Client struct {
	server  string
	http    *http.Client
	timeout time.Duration
	token   string // bearer token, "" for none
}

// Limits on what the client reads back.
const (
	maxResponseBytes = 64 << 20
	maxErrorBytes    = 64 << 10
	// DefaultTimeout bounds every request but a log stream.
	DefaultTimeout = 30 * time.Second
)

// NewClient returns a client of the controller at server
// (e.g. http://127.0.0.1:5000). hc may be nil (http.DefaultClient).
func NewClient(server string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{server: normalizeServer(server), http: hc, timeout: DefaultTimeout}
}

// WithToken makes the client send token as its bearer token.
func (c *Client) WithToken(token string) *Client {
	c.token = token
	return c
}

// ListWorkloads lists every workload.
func (c *Client) ListWorkloads(ctx context.Context) ([]WorkloadItem, error) {
	var out []WorkloadItem
	return out, c.do(ctx, http.MethodGet, "workloads.list", nil, &out)
}

// WorkloadInstances lists the instances of a workload (id or name).
func (c *Client) WorkloadInstances(ctx context.Context, id string) ([]InstanceItem, error) {
	var out []InstanceItem
	return out, c.do(ctx, http.MethodGet, "workloads.instances/"+url.PathEscape(id), nil, &out)
}

// CreateWorkload sends a JSON workload definition.
func (c *Client) CreateWorkload(ctx context.Context, definition []byte) (WorkloadItem, error) {
	var out WorkloadItem
	return out, c.do(ctx, http.MethodPost, "workloads.create", json.RawMessage(definition), &out)
}

// DeleteWorkload deletes a workload (id or name) and its instances.
func (c *Client) DeleteWorkload(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPost, "workloads.delete", api.IDRequest{ID: id}, nil)
}

// ListInstances lists every instance.
func (c *Client) ListInstances(ctx context.Context) ([]InstanceItem, error) {
	var out []InstanceItem
	return out, c.do(ctx, http.MethodGet, "instances.list", nil, &out)
}

// CreateInstances creates instances of a workload.
func (c *Client) CreateInstances(ctx context.Context, req api.CreateInstancesRequest) ([]InstanceItem, error) {
	var out []InstanceItem
	return out, c.do(ctx, http.MethodPost, "instances.create", req, &out)
}

// GetInstance returns one instance (id or name).
func (c *Client) GetInstance(ctx context.Context, id string) (InstanceItem, error) {
	var out InstanceItem
	return out, c.do(ctx, http.MethodGet, "instances.get/"+url.PathEscape(id), nil, &out)
}

// DeleteInstance asks for an instance (id or name) to be destroyed.
func (c *Client) DeleteInstance(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPost, "instances.delete", api.IDRequest{ID: id}, nil)
}

// ListNodes lists the nodes the scheduler knows.
func (c *Client) ListNodes(ctx context.Context) ([]api.Item[api.Node], error) {
	var out []api.Item[api.Node]
	return out, c.do(ctx, http.MethodGet, "nodes.list", nil, &out)
}

// Logs copies the logs of an instance (id or name) to w, until the stream
// ends or ctx is done.
func (c *Client) Logs(ctx context.Context, id string, opts LogOptions, w io.Writer) error {
	q := url.Values{}
	if opts.Container != "" {
		q.Set("container", opts.Container)
	}
	q.Set("follow", strconv.FormatBool(opts.Follow))
	if opts.Tail > 0 {
		q.Set("tail", strconv.Itoa(opts.Tail))
	}
	resp, err := c.send(ctx, http.MethodGet, "instances.logs/"+url.PathEscape(id)+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := checkStatus(resp); err != nil {
		return err
	}
	if _, err := io.Copy(w, resp.Body); err != nil && ctx.Err() == nil {
		return fmt.Errorf("reading logs of %s: %w", id, err)
	}
	return nil
}

// maxEventBytes bounds one server-sent event.
const maxEventBytes = 1 << 20

// do sends body as JSON (if not nil) and decodes a 2xx answer into out (if
// not nil), within the client's timeout.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encoding request to %s: %w", path, err)
		}
		r = bytes.NewReader(b)
	}
	resp, err := c.send(ctx, method, path, r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := checkStatus(resp); err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponseBytes)).Decode(out); err != nil {
		return fmt.Errorf("decoding answer of %s: %w", path, err)
	}
	return nil
}

// url is the URL of an API route ("nodes.list"), or of a path from the
// server's root ("/healthz").
func (c *Client) url(path string) string {
	if strings.HasPrefix(path, "/") {
		return c.server + path
	}
	return c.server + "/api/v0/" + path
}

func (c *Client) send(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.url(path), body)
	if err != nil {
		return nil, fmt.Errorf("building request to %s: %w", path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return nil, &UnreachableError{Server: c.server, Err: err}
		}
		var unknownCA x509.UnknownAuthorityError
		if errors.As(err, &unknownCA) {
			return nil, fmt.Errorf("%s: the controller's certificate is not signed by a CA rikctl trusts: "+
				"pass --certificate-authority or set cluster.certificate-authority in the config (%w)", c.server, err)
		}
		return nil, fmt.Errorf("%s %s: %w", method, c.url(path), err)
	}
	if err := c.explainStatus(resp); err != nil {
		resp.Body.Close()
		return nil, err
	}
	return resp, nil
}

// explainStatus turns the answers that need the user to change how rikctl
// connects (401, 403, plain HTTP sent to HTTPS) into an error saying what
// to do; nil for the others.
func (c *Client) explainStatus(resp *http.Response) error {
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		msg := "unauthorized: pass --token, set RIK_TOKEN or set user.token in the rikctl config"
		if c.token != "" {
			msg = "unauthorized: the controller refused the token (unknown, expired or deleted)"
		}
		return &APIError{StatusCode: resp.StatusCode, Message: msg}
	case http.StatusForbidden:
		return checkStatus(resp) // the server says which role is needed
	case http.StatusBadRequest:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
		if strings.Contains(string(b), "HTTP request to an HTTPS server") {
			return &APIError{StatusCode: resp.StatusCode, Message: "the controller at " + c.server +
				" serves HTTPS: use an https:// server (with --certificate-authority if its CA is not a system one)"}
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
	}
	return nil
}

// checkStatus turns a non-2xx answer into an *APIError with the server's
// {"error": "..."} text, or the status line when there is none.
func checkStatus(resp *http.Response) error {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
	var e api.Error
	msg := ""
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		msg = e.Error
	} else {
		msg = strings.TrimSpace(resp.Status)
		if t := strings.TrimSpace(string(b)); t != "" && len(t) < 200 {
			msg += ": " + t
		}
	}
	return &APIError{StatusCode: resp.StatusCode, Message: msg}
}
