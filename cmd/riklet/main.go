// Command riklet is rik's node agent: it registers with the scheduler and
// runs the Pods and Functions it is ordered to run.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/rik-org/rik/internal/riklet"
	"github.com/rik-org/rik/internal/riklet/ledger"
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
	uninstall  bool
	// security
	pkiDir     string
	joinToken  string
	caCertHash string
	insecure   bool
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
	fs.DurationVar(&f.heartbeat, "heartbeat", 5*time.Second, "heartbeat interval (at most: shortened to what the scheduler's node timeout needs)")
	f.runtimes.RegisterFlags(fs)
	fs.StringVar(&f.pkiDir, "pki-dir", "", "node certificate, key and cluster CA certificate (default <state-dir>/pki)")
	fs.StringVar(&f.joinToken, "join-token", os.Getenv("RIK_JOIN_TOKEN"), "bootstrap token to join the cluster when the node has no certificate (`rik token create`; default $RIK_JOIN_TOKEN)")
	fs.StringVar(&f.caCertHash, "ca-cert-hash", "", "sha256:<hex> pin of the cluster CA's public key, printed by `rik ca init` (required with --join-token)")
	fs.BoolVar(&f.insecure, "insecure", false, "talk to the scheduler in plaintext, without certificate (a scheduler run with --insecure, or RIK's)")
	fs.BoolVar(&f.uninstall, "uninstall", false, "remove rik's network from this node (iptables chains and jumps, TAPs, pod bridge) and exit; refused while the ledger lists instances; run it with the riklet stopped")
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
	f.runtimes.ProtectAddrs(f.masterAddr) // pods may not reach a scheduler on this node
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if f.uninstall {
		release, err := riklet.LockHost(riklet.DefaultHostLockDir) // not while a riklet runs here
		if err != nil {
			fmt.Fprintln(os.Stderr, "riklet: not uninstalling:", err)
			os.Exit(1)
		}
		defer release()
		if err := uninstall(ctx, f.stateDir, f.runtimes, runtimes.Uninstall); err != nil {
			fmt.Fprintln(os.Stderr, "riklet:", err)
			os.Exit(1)
		}
		fmt.Fprintln(os.Stdout, "riklet: rik's network is removed from this node")
		return
	}
	err = riklet.Run(ctx, riklet.Config{
		MasterAddr:        f.masterAddr,
		Hostname:          f.hostname,
		StateDir:          f.stateDir,
		Runtimes:          runtimes.Factories(f.runtimes),
		Labels:            f.labels,
		HeartbeatInterval: f.heartbeat,
		Logger:            log,
		PKIDir:            f.pkiDir,
		JoinToken:         f.joinToken,
		CACertHash:        f.caCertHash,
		Insecure:          f.insecure,
		HostLockDir:       riklet.DefaultHostLockDir,
	})
	if err != nil {
		log.Error("riklet failed", "error", err)
		os.Exit(1)
	}
}

// uninstall removes rik's network from the node. It stops nothing, so it
// refuses while the ledger in stateDir lists instances: they still use
// that network.
func uninstall(ctx context.Context, stateDir string, rt runtimes.Config, remove func(context.Context, runtimes.Config) error) error {
	path := filepath.Join(stateDir, "ledger.json")
	names, err := ledgerInstances(path)
	if err != nil {
		return fmt.Errorf("not uninstalling: %w", err)
	}
	if len(names) > 0 {
		shown := names
		if len(shown) > 5 {
			shown = append(shown[:5:5], "...")
		}
		return fmt.Errorf("not uninstalling: the ledger %s still lists %d instance(s) (%s); "+
			"delete them (rikctl delete instance) and let the riklet stop them first",
			path, len(names), strings.Join(shown, ", "))
	}
	rt.StateDir = stateDir
	return remove(ctx, rt)
}

// ledgerInstances returns the names of the instances the ledger at path
// lists; a missing ledger lists none. One that cannot be read is an error:
// nothing can be known about what runs.
func ledgerInstances(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading ledger: %w", err)
	}
	var l struct {
		Instances []ledger.Entry `json:"instances"`
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("reading ledger %s: %w", path, err)
	}
	names := make([]string, 0, len(l.Instances))
	for _, e := range l.Instances {
		name := e.Name
		if name == "" {
			name = e.InstanceID
		}
		names = append(names, name)
	}
	sort.Strings(names)
	return names, nil
}
