package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Config of a load run.
type Config struct {
	Server         string // controller base URL
	Workload       string // workload id or name
	DefinitionFile string // create the workload from this file first ("" = it exists)
	Requests       int
	Concurrency    int
	Replicas       int // per request
	Cleanup        bool
	Timeout        time.Duration
	Token          string // bearer token ("" for none: an --insecure controller)
	CAFile         string // CA of an https:// controller ("" for the system's)
	Client         *http.Client
	Out            io.Writer
}

// Result of a load run.
type Result struct {
	Requests  int
	Errors    int
	Instances []string // ids created
	Latencies []time.Duration
	Elapsed   time.Duration
	FirstErr  error
}

// Run validates cfg, optionally creates the workload, sends the load and
// prints the report.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.check(); err != nil {
		return err
	}
	if cfg.Client == nil {
		c, err := newClient(cfg)
		if err != nil {
			return err
		}
		cfg.Client = c
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.DefinitionFile != "" {
		def, err := os.ReadFile(cfg.DefinitionFile)
		if err != nil {
			return fmt.Errorf("reading workload definition: %w", err)
		}
		if _, err := post(ctx, cfg, "workloads.create", def); err != nil {
			return fmt.Errorf("creating workload: %w", err)
		}
	}
	res := Load(ctx, cfg)
	fmt.Fprint(cfg.Out, Report(res, cfg))
	if cfg.Cleanup {
		var errs []error
		for _, id := range res.Instances {
			body, _ := json.Marshal(map[string]string{"id": id})
			if _, err := post(ctx, cfg, "instances.delete", body); err != nil {
				errs = append(errs, fmt.Errorf("deleting instance %s: %w", id, err))
			}
		}
		if err := errors.Join(errs...); err != nil {
			return err
		}
	}
	if res.Errors == res.Requests && res.Requests > 0 {
		return fmt.Errorf("every request failed, first: %w", res.FirstErr)
	}
	return nil
}

func (cfg *Config) check() error {
	switch {
	case !strings.HasPrefix(cfg.Server, "http://") && !strings.HasPrefix(cfg.Server, "https://"):
		return fmt.Errorf("--server %q: want http://host:port", cfg.Server)
	case cfg.Workload == "":
		return errors.New("--workload: required")
	case cfg.Requests < 1:
		return errors.New("-n: must be at least 1")
	case cfg.Concurrency < 1:
		return errors.New("-c: must be at least 1")
	case cfg.Replicas < 1 || cfg.Replicas > 1000:
		return errors.New("--replicas: must be between 1 and 1000")
	}
	cfg.Server = strings.TrimRight(cfg.Server, "/")
	return nil
}

// Load sends cfg.Requests instances.create requests, cfg.Concurrency at a
// time, until done or ctx ends.
func Load(ctx context.Context, cfg Config) Result {
	body, _ := json.Marshal(map[string]any{"workload_id": cfg.Workload, "replicas": cfg.Replicas})
	jobs := make(chan struct{})
	var (
		mu  sync.Mutex
		res Result
		wg  sync.WaitGroup
	)
	start := time.Now()
	for range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				t0 := time.Now()
				out, err := post(ctx, cfg, "instances.create", body)
				d := time.Since(t0)
				var items []struct {
					ID string `json:"id"`
				}
				if err == nil {
					if jerr := json.Unmarshal(out, &items); jerr != nil {
						err = fmt.Errorf("decoding answer: %w", jerr)
					}
				}
				mu.Lock()
				res.Requests++
				if err != nil {
					res.Errors++
					if res.FirstErr == nil {
						res.FirstErr = err
					}
				} else {
					res.Latencies = append(res.Latencies, d)
					for _, it := range items {
						res.Instances = append(res.Instances, it.ID)
					}
				}
				mu.Unlock()
			}
		}()
	}
	for range cfg.Requests {
		select {
		case jobs <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(jobs)
	wg.Wait()
	res.Elapsed = time.Since(start)
	return res
}

// newClient is an HTTP client with cfg's timeout, trusting cfg.CAFile.
func newClient(cfg Config) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = cfg.Concurrency // keep one connection per worker
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading --certificate-authority: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--certificate-authority %s: no PEM certificate", cfg.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Timeout: cfg.Timeout, Transport: tr}, nil
}

// post sends body as JSON to route and returns the answer; non-2xx is an
// error.
func post(ctx context.Context, cfg Config, route string, body []byte) ([]byte, error) {
	url := cfg.Server + "/api/v0/" + route
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+cfg.Token)
	}
	resp, err := cfg.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("reading answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("POST %s: %s: %s", url, resp.Status, bytes.TrimSpace(out))
	}
	return out, nil
}

// Percentile returns the p-th percentile (0..100) of sorted latencies by
// the nearest-rank method; 0 for none.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	if p <= 0 {
		return sorted[0]
	}
	if p >= 100 {
		return sorted[len(sorted)-1]
	}
	rank := int(float64(len(sorted))*p/100 + 0.999999999)
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

// Report formats a run.
func Report(res Result, cfg Config) string {
	lat := slices.Clone(res.Latencies)
	slices.Sort(lat)
	var b strings.Builder
	fmt.Fprintf(&b, "requests: %d (concurrency %d, %d replicas each), errors: %d, instances created: %d\n",
		res.Requests, cfg.Concurrency, cfg.Replicas, res.Errors, len(res.Instances))
	secs := res.Elapsed.Seconds()
	if secs > 0 {
		fmt.Fprintf(&b, "elapsed: %s, throughput: %.1f req/s, %.1f instances/s\n",
			res.Elapsed.Round(time.Millisecond), float64(res.Requests-res.Errors)/secs, float64(len(res.Instances))/secs)
	}
	fmt.Fprintf(&b, "latency: p50 %s, p90 %s, p99 %s, max %s\n",
		Percentile(lat, 50).Round(10*time.Microsecond), Percentile(lat, 90).Round(10*time.Microsecond),
		Percentile(lat, 99).Round(10*time.Microsecond), Percentile(lat, 100).Round(10*time.Microsecond))
	if res.FirstErr != nil {
		fmt.Fprintf(&b, "first error: %v\n", res.FirstErr)
	}
	return b.String()
}
