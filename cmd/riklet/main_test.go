package main

import (
	"io"
	"log/slog"
	"os"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	f, err := parseFlags([]string{"--master-ip", "http://10.0.0.1:4995", "--hostname", "n1", "--state-dir", "/tmp/x",
		"--label", "zone=a", "--label", "disk = ssd", "--heartbeat", "2s", "--log-level", "debug"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if f.masterAddr != "http://10.0.0.1:4995" || f.hostname != "n1" || f.stateDir != "/tmp/x" ||
		f.labels["zone"] != "a" || f.labels["disk"] != "ssd" || len(f.labels) != 2 ||
		f.heartbeat != 2*time.Second || f.logLevel != slog.LevelDebug {
		t.Errorf("flags = %+v", f)
	}

	f, err = parseFlags(nil, io.Discard)
	host, _ := os.Hostname()
	if err != nil || f.masterAddr != "127.0.0.1:4995" || f.stateDir != "/var/lib/riklet" || f.hostname != host ||
		f.heartbeat != 5*time.Second || f.logLevel != slog.LevelInfo {
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
