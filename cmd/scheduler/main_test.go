package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/scheduler"
)

// parse runs the command line and returns the configuration it gives.
func parse(t *testing.T, args ...string) (scheduler.Config, error) {
	t.Helper()
	var got scheduler.Config
	cmd := newCommand(func(_ context.Context, cfg scheduler.Config) error { got = cfg; return nil })
	cmd.SetArgs(args)
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	return got, cmd.ExecuteContext(context.Background())
}

func TestFlags(t *testing.T) {
	cfg, err := parse(t, "--config", "/dev/null", "--workers-addr", "127.0.0.1:1", "--controllers-addr", "127.0.0.1:2",
		"--tls-san", "a,b", "--tls-san", "c", "--node-timeout", "3s", "--insecure", "--log-format", "json")
	if err != nil || cfg.WorkersAddr != "127.0.0.1:1" || cfg.ControllersAddr != "127.0.0.1:2" || len(cfg.TLSNames) != 3 ||
		cfg.NodeTimeout != 3*time.Second || !cfg.Insecure || cfg.Logger == nil || cfg.MetricsAddr != DefaultMetricsAddr {
		t.Errorf("config %+v, %v", cfg, err)
	}
	// RIK's flag names.
	cfg, err = parse(t, "--config", "/dev/null", "--workersip", "127.0.0.1:3", "--ctrlip", "127.0.0.1:4")
	if err != nil || cfg.WorkersAddr != "127.0.0.1:3" || cfg.ControllersAddr != "127.0.0.1:4" {
		t.Errorf("RIK's flags: %+v, %v", cfg, err)
	}
	for _, bad := range [][]string{{"extra"}, {"--nope"}, {"--log-level", "loud"}, {"--node-timeout", "soon"}} {
		if _, err := parse(t, append([]string{"--config", "/dev/null"}, bad...)...); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
