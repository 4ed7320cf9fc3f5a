// Command riklet is rik's node agent: it registers with the scheduler and
// runs the Pods and Functions it is ordered to run.
//
// Every flag is also read from RIK_<FLAG> (e.g. RIK_SCHEDULER_ADDR,
// RIK_JOIN_TOKEN) and from /etc/rik/riklet.yaml (or --config); RIK's
// --master-ip stays accepted. See `riklet --help`.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/rik-org/rik/internal/cliconf"
	"github.com/rik-org/rik/internal/riklet"
	"github.com/rik-org/rik/internal/riklet/ledger"
	"github.com/rik-org/rik/internal/riklet/runtimes"
	"github.com/rik-org/rik/internal/riklet/vmm"
)

// flags are riklet's command line.
type flags struct {
	masterAddr  string
	hostname    string
	stateDir    string
	labels      map[string]string
	heartbeat   time.Duration
	metricsAddr string
	logging     cliconf.Logging
	runtimes    runtimes.Config
	uninstall   bool
	// security
	pkiDir     string
	joinToken  string
	caCertHash string
	insecure   bool
}

// DefaultMetricsAddr serves /metrics and /healthz: loopback, for neither
// asks for credentials.
const DefaultMetricsAddr = "127.0.0.1:4998"

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

// defineFlags defines riklet's own flags and the runtimes' on fs.
func defineFlags(fs *flag.FlagSet, f *flags) {
	fs.StringVar(&f.masterAddr, "scheduler-addr", riklet.DefaultMasterAddr, "the scheduler's address for workers (host:port, http://host:port accepted; RIK's --master-ip)")
	fs.StringVar(&f.hostname, "hostname", "", "node name (default: the host name)")
	fs.StringVar(&f.stateDir, "state-dir", "/var/lib/riklet", "directory of the ledger and runtime state")
	fs.Var(labelFlag(f.labels), "label", "node label `key=value` (repeatable)")
	fs.DurationVar(&f.heartbeat, "heartbeat", 5*time.Second, "heartbeat interval (at most: shortened to what the scheduler's node timeout needs)")
	fs.StringVar(&f.metricsAddr, "metrics-addr", DefaultMetricsAddr, "serve /metrics and /healthz on this address, without authentication (keep it on loopback or a trusted network); empty: off")
	f.runtimes.RegisterFlags(fs)
	fs.StringVar(&f.pkiDir, "pki-dir", "", "node certificate, key and cluster CA certificate (default <state-dir>/pki)")
	fs.StringVar(&f.joinToken, "join-token", "", "bootstrap token to join the cluster when the node has no certificate ('rik token create')")
	fs.StringVar(&f.caCertHash, "ca-cert-hash", "", "sha256:<hex> pin of the cluster CA's public key, printed by 'rik ca init' (required with --join-token)")
	fs.BoolVar(&f.insecure, "insecure", false, "talk to the scheduler in plaintext, without certificate (a scheduler run with --insecure, or RIK's)")
	fs.BoolVar(&f.uninstall, "uninstall", false, "remove rik's network from this node (iptables chains and jumps, TAPs, pod bridge) and exit; refused while the ledger lists instances; run it with the riklet stopped")
}

// check completes and checks the flags once parsed.
func (f *flags) check() error {
	if f.heartbeat <= 0 {
		return errors.New("--heartbeat: must be positive")
	}
	if f.stateDir == "" {
		return errors.New("--state-dir: required")
	}
	if err := f.runtimes.Validate(); err != nil {
		return err
	}
	if f.hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("reading hostname: %w", err)
		}
		f.hostname = h
	}
	return nil
}

// newCommand is riklet's command line; run is called with the flags it
// reads and the logger they ask for.
func newCommand(run func(context.Context, flags, *slog.Logger) error) *cobra.Command {
	f := flags{labels: map[string]string{}}
	cmd := &cobra.Command{
		Use:   "riklet",
		Short: "rik's node agent: runs the Pods and Functions the scheduler orders",
		Long: "The riklet registers the node with the scheduler (joining with --join-token and --ca-cert-hash\n" +
			"the first time), runs the Pods (runc) and Functions (microVMs) it is ordered to run, and\n" +
			"programs the node's network for them. It runs as root.\n\n" +
			"Each flag is also read from the environment (RIK_<FLAG>, e.g. RIK_SCHEDULER_ADDR) and from\n" +
			"/etc/rik/riklet.yaml (or --config); precedence: flag, environment, file, default.",
		Example: "  riklet --scheduler-addr 10.0.0.1:4995 --join-token abcdef.0123456789abcdef --ca-cert-hash sha256:...\n" +
			"  riklet --insecure --scheduler-addr 127.0.0.1:4995 --kernel-path /var/lib/rik/vmlinux\n" +
			"  riklet --uninstall",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(); err != nil {
				return err
			}
			log, err := f.logging.Logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return run(cmd.Context(), f, log)
		},
	}
	cliconf.AddGoFlags(cmd, func(fs *flag.FlagSet) { defineFlags(fs, &f) })
	f.logging.AddFlags(cmd.Flags())
	cliconf.Setup(cmd, cliconf.Options{Component: "riklet", FlagAliases: map[string]string{"master-ip": "scheduler-addr"}})
	return cmd
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newCommand(runRiklet).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "riklet:", err)
		os.Exit(1)
	}
}

// runRiklet runs the node agent, or removes its network (--uninstall).
func runRiklet(ctx context.Context, f flags, log *slog.Logger) error {
	if msg := f.runtimes.ResolveKernel(os.DirFS("/"), vmm.DefaultKernelDirs); msg != "" {
		log.Info(msg) // --kernel-path auto
	}
	f.runtimes.StateDir = f.stateDir
	f.runtimes.Logger = log
	f.runtimes.ProtectAddrs(f.masterAddr) // pods may not reach a scheduler on this node
	if f.uninstall {
		release, err := riklet.LockHost(riklet.DefaultHostLockDir) // not while a riklet runs here
		if err != nil {
			return fmt.Errorf("not uninstalling: %w", err)
		}
		defer release()
		if err := uninstall(ctx, f.stateDir, f.runtimes, runtimes.Uninstall); err != nil {
			return err
		}
		fmt.Fprintln(os.Stdout, "riklet: rik's network is removed from this node")
		return nil
	}
	cfg := riklet.Config{
		MasterAddr:        f.masterAddr,
		Hostname:          f.hostname,
		StateDir:          f.stateDir,
		Labels:            f.labels,
		HeartbeatInterval: f.heartbeat,
		Logger:            log,
		PKIDir:            f.pkiDir,
		JoinToken:         f.joinToken,
		CACertHash:        f.caCertHash,
		Insecure:          f.insecure,
		HostLockDir:       riklet.DefaultHostLockDir,
		MetricsAddr:       f.metricsAddr,
	}
	if err := f.runtimes.JoinFabric(f.hostname, &cfg); err != nil {
		return err
	}
	cfg.Runtimes = runtimes.Factories(f.runtimes)
	return riklet.Run(ctx, cfg)
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
