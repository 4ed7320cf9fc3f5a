package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/riklet/runtimes"
)

func TestParseFlags(t *testing.T) {
	f, err := parseFlags([]string{"--master-ip", "http://10.0.0.1:4995", "--hostname", "n1", "--state-dir", "/tmp/x",
		"--label", "zone=a", "--label", "disk = ssd", "--heartbeat", "2s", "--log-level", "debug",
		"--join-token", "abcdef.0123456789abcdef", "--ca-cert-hash", "sha256:00", "--pki-dir", "/etc/x", "--insecure"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if f.masterAddr != "http://10.0.0.1:4995" || f.hostname != "n1" || f.stateDir != "/tmp/x" ||
		f.labels["zone"] != "a" || f.labels["disk"] != "ssd" || len(f.labels) != 2 ||
		f.heartbeat != 2*time.Second || f.logging.Level != "debug" ||
		f.joinToken != "abcdef.0123456789abcdef" || f.caCertHash != "sha256:00" || f.pkiDir != "/etc/x" || !f.insecure {
		t.Errorf("flags = %+v", f)
	}

	f, err = parseFlags(nil, io.Discard)
	host, _ := os.Hostname()
	if err != nil || f.masterAddr != "127.0.0.1:4995" || f.stateDir != "/var/lib/riklet" || f.hostname != host ||
		f.heartbeat != 5*time.Second || f.logging.Level != "info" || f.insecure || f.pkiDir != "" || f.metricsAddr != DefaultMetricsAddr {
		t.Errorf("defaults = %+v, %v", f, err)
	}

	for _, bad := range [][]string{
		{"--label", "novalue"}, {"--label", "=v"}, {"--heartbeat", "0s"}, {"--log-level", "loud"}, {"extra"}, {"--nope"},
		{"--pod-cidr", "10.63.0.0"}, {"--function-cidr", "10.63.0.0/24"}, {"--vmm", "kvm"}, {"--cgroup-parent", "../x"},
		{"--state-dir", ""},
	} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}

// parseFlags runs the command line and returns the flags it reads (the
// file is /dev/null: none).
func parseFlags(args []string, stderr io.Writer) (flags, error) {
	var got flags
	cmd := newCommand(func(_ context.Context, f flags, _ *slog.Logger) error { got = f; return nil })
	cmd.SetArgs(append([]string{"--config", "/dev/null"}, args...))
	cmd.SetOut(io.Discard)
	cmd.SetErr(stderr)
	return got, cmd.ExecuteContext(context.Background())
}

func TestUninstall(t *testing.T) {
	type call struct{ stateDir, bridge string }
	for _, tc := range []struct {
		name    string
		ledger  string // "" = no file
		removed bool
		errHas  []string
	}{
		{name: "no ledger", removed: true},
		{name: "empty ledger", ledger: `{"version":1,"instances":[]}`, removed: true},
		{name: "instances", ledger: `{"version":1,"instances":[{"instanceId":"u1","name":"web-a1b2c"},{"instanceId":"u2"}]}`,
			errHas: []string{"2 instance(s)", "web-a1b2c", "u2", "ledger.json"}},
		{name: "corrupt", ledger: `{"instances":`, errHas: []string{"reading ledger"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.ledger != "" {
				if err := os.WriteFile(filepath.Join(dir, "ledger.json"), []byte(tc.ledger), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var calls []call
			remove := func(ctx context.Context, rt runtimes.Config) error {
				calls = append(calls, call{rt.StateDir, rt.Bridge})
				return nil
			}
			err := uninstall(context.Background(), dir, runtimes.Config{Bridge: "br1"}, remove)
			if tc.removed {
				if err != nil || len(calls) != 1 || calls[0] != (call{dir, "br1"}) {
					t.Errorf("uninstall = %v, calls %v; want one removal in %s", err, calls, dir)
				}
				return
			}
			if len(calls) != 0 {
				t.Errorf("network removed although refused: %v", calls)
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, s := range tc.errHas {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
		})
	}
	if f, err := parseFlags([]string{"--uninstall", "--state-dir", "/tmp/y"}, io.Discard); err != nil || !f.uninstall {
		t.Errorf("--uninstall: %+v, %v", f, err)
	}
}
