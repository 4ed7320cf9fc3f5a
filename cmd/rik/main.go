// Command rik is the one-command way to try rik: `rik dev` runs a
// controller, a scheduler and a riklet in one process on the embedded store.
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
	"syscall"
	"time"

	"github.com/rik-org/rik/internal/controller"
	"github.com/rik-org/rik/internal/dev"
	"github.com/rik-org/rik/internal/rikctl"
	"github.com/rik-org/rik/internal/riklet"
	"github.com/rik-org/rik/internal/riklet/runtimes"
	"github.com/rik-org/rik/internal/version"
)

const usage = `usage: rik <command> [flags]

commands:
  dev       run controller, scheduler and one riklet in this process
  ca        create the cluster CA, issue controller certificates
  token     create, list and revoke join tokens for nodes
  version   print the version
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "dev":
		return runDev(ctx, args[1:], stdout, stderr)
	case "ca":
		return runCA(args[1:], stdout, stderr)
	case "token":
		return runToken(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "rik", version.Version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "rik: unknown command %q\n%s", args[0], usage)
		return 2
	}
}

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var (
		cfg dev.Config
		rt  runtimes.Config
	)
	fs := flag.NewFlagSet("rik dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.DataDir, "data-dir", "", "store and node state (default: a new temporary directory)")
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:5000", "REST API address")
	fs.StringVar(&cfg.WorkersAddr, "workers-addr", "127.0.0.1:4995", "scheduler address for riklets")
	fs.StringVar(&cfg.ControllersAddr, "controllers-addr", "127.0.0.1:4996", "scheduler address for controllers")
	fs.StringVar(&cfg.Hostname, "hostname", "", "node name (default: the host name)")
	fs.DurationVar(&cfg.NodeTimeout, "node-timeout", 15*time.Second, "a node silent this long is NotReady")
	fs.BoolVar(&cfg.Insecure, "insecure", false, "plaintext everywhere: the API over HTTP without tokens, the components without mutual TLS (default: HTTPS with the admin token printed, mutual TLS with a CA in <data-dir>/pki)")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	// The quick start serves images and rootfs on 127.0.0.1.
	rt.AllowPrivateFetch = true
	rt.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "rik dev: unexpected arguments: %v\n", fs.Args())
		return 2
	}
	if err := rt.Validate(); err != nil {
		fmt.Fprintf(stderr, "rik dev: %v\n", err)
		return 2
	}
	if rt.PodCIDR == runtimes.PodCIDRAuto {
		fmt.Fprintln(stderr, "rik dev: --pod-cidr auto is for the riklets of a fleet: rik dev runs one node")
		return 2
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "rik dev: --log-level: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	if cfg.DataDir == "" {
		dir, err := os.MkdirTemp("", "rik-dev-")
		if err != nil {
			fmt.Fprintf(stderr, "rik dev: %v\n", err)
			return 1
		}
		cfg.DataDir = dir
		cfg.Temporary = true // nothing will reuse it: stop everything, remove it
	}
	if os.Geteuid() != 0 {
		log.Warn("not running as root: this node offers no pods or functions (they need runc, netlink and iptables)")
		rt.Pods, rt.KernelPath = false, ""
	} else {
		cfg.HostLockDir = riklet.DefaultHostLockDir // one riklet per host: it owns rik's chains and devices
	}
	rt.ProtectAddrs(cfg.Addr, cfg.WorkersAddr, cfg.ControllersAddr) // pods may not reach them
	rt.StateDir = cfg.DataDir + "/riklet"
	rt.Logger = log.With("component", "riklet")
	cfg.Runtimes = runtimes.Factories(rt)
	cfg.Admission = devAdmission(rt)
	cfg.Uninstall = hostCleanup(cfg.Temporary, rt)
	cfg.Logger = log
	cfg.Out = stdout
	cfg.RikctlConfig = rikctl.ConfigPath(os.Getenv) // so that rikctl works with no set-up
	if err := dev.Run(ctx, cfg); err != nil {
		fmt.Fprintf(stderr, "rik dev: %v\n", err)
		return 1
	}
	return 0
}

// hostCleanup returns what removes the node's network from the host on
// exit of a temporary cluster (it outlives the data dir), or nil when the
// data dir is kept or the node offers no runtime (and so programs nothing).
func hostCleanup(temporary bool, rt runtimes.Config) func(context.Context) error {
	if !temporary || (!rt.Pods && rt.KernelPath == "") {
		return nil
	}
	return func(ctx context.Context) error { return runtimes.Uninstall(ctx, rt) }
}

// devAdmission is the controller's admission in `rik dev`: the default,
// with the node's rootfs directories and reserved ports when given, so
// that the controller and the node judge alike.
func devAdmission(rt runtimes.Config) *controller.Admission {
	a := controller.DefaultAdmission()
	if rt.RootfsDirs != nil {
		a.Policy.RootfsDirs = rt.RootfsDirs
	}
	if rt.ReservedPorts != nil {
		a.Policy.ReservedPorts = rt.ReservedPorts
	}
	return &a
}
