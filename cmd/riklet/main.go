// Command riklet is rik's node agent: it registers with the scheduler and
// runs the Pods and Functions it is ordered to run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rik-org/rik/internal/riklet"
	"github.com/rik-org/rik/internal/riklet/runtimes"
)

// flags are riklet's command line.
type flags struct {
	masterAddr string
	hostname   string
	stateDir   string
	labels     map[string]string
	heartbeat  time.Duration
	logLevel   slog.Level
	runtimes   runtimes.Config
}

// labelFlag collects repeated --label k=v.
type labelFlag map[string]string

func (l labelFlag) String() string { return "" }

func (l labelFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("label %q: want key=value", s)
	}
	l[strings.TrimSpace(k)] = strings.TrimSpace(v)
	return nil
}

func parseFlags(args []string, stderr io.Writer) (flags, error) {
	f := flags{labels: map[string]string{}}
	fs := flag.NewFlagSet("riklet", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.masterAddr, "master-ip", riklet.DefaultMasterAddr, "scheduler address for workers (host:port, http://host:port accepted)")
	fs.StringVar(&f.hostname, "hostname", "", "node name (default: the host name)")
	fs.StringVar(&f.stateDir, "state-dir", "/var/lib/riklet", "directory of the ledger and runtime state")
	fs.Var(labelFlag(f.labels), "label", "node label key=value (repeatable)")
	fs.DurationVar(&f.heartbeat, "heartbeat", 5*time.Second, "heartbeat interval")
	f.runtimes.RegisterFlags(fs)
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if err := f.logLevel.UnmarshalText([]byte(*level)); err != nil {
		return f, fmt.Errorf("--log-level: %w", err)
	}
	if f.heartbeat <= 0 {
		return f, errors.New("--heartbeat: must be positive")
	}
	if f.stateDir == "" {
		return f, errors.New("--state-dir: required")
	}
	if err := f.runtimes.Validate(); err != nil {
		return f, err
	}
	if f.hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return f, fmt.Errorf("reading hostname: %w", err)
		}
		f.hostname = h
	}
	return f, nil
}

func main() {
	f, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "riklet:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: f.logLevel}))
	f.runtimes.StateDir = f.stateDir
	f.runtimes.Logger = log
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = riklet.Run(ctx, riklet.Config{
		MasterAddr:        f.masterAddr,
		Hostname:          f.hostname,
		StateDir:          f.stateDir,
		Runtimes:          runtimes.Factories(f.runtimes),
		Labels:            f.labels,
		HeartbeatInterval: f.heartbeat,
		Logger:            log,
	})
	if err != nil {
		log.Error("riklet failed", "error", err)
		os.Exit(1)
	}
}
