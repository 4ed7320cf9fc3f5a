// Command rik is the one-command way to try rik: `rik dev` runs a
// controller, a scheduler and a riklet in one process on the embedded store.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/rik-org/rik/internal/cliconf"
	"github.com/rik-org/rik/internal/controller"
	"github.com/rik-org/rik/internal/dev"
	"github.com/rik-org/rik/internal/rikctl"
	"github.com/rik-org/rik/internal/riklet"
	"github.com/rik-org/rik/internal/riklet/runtimes"
	"github.com/rik-org/rik/internal/riklet/vmm"
	"github.com/rik-org/rik/internal/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// exitCode is an error that only sets the exit code (its message, if any,
// is already printed).
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit %d", int(c)) }

// usageError is a command line that makes no sense: exit 2.
type usageError struct{ error }

// run runs one rik command line and returns its exit code: 0, 1 when the
// command failed, 2 for a bad command line.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	var code exitCode
	var usage usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &code):
		return int(code)
	case errors.As(err, &usage):
		fmt.Fprintln(stderr, "rik:", err)
		return 2
	}
	fmt.Fprintln(stderr, "rik:", err)
	return 1
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "rik",
		Short: "rik: try a cluster in one command, manage its CA and join tokens",
		Example: "  rik dev                      # controller, scheduler and riklet in this process\n" +
			"  rik ca init --dir /etc/rik/pki\n" +
			"  rik token create --ttl 1h",
		Args:          cobra.ArbitraryArgs,
		SilenceErrors: true,
		SilenceUsage:  true,
		Version:       version.Version,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unknown command %q (see rik --help)", args[0])}
			}
			cmd.SetOut(cmd.ErrOrStderr())
			_ = cmd.Usage()
			return exitCode(2)
		},
	}
	root.SetVersionTemplate(version.String("rik") + "\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(newDevCommand(),
		passThrough("ca", "Create the cluster CA, issue controller certificates", caUsage, withoutContext(runCA)),
		passThrough("token", "Create, list and revoke join tokens for nodes", tokenUsage, withoutContext(runToken)),
		passThrough("doctor", "Check this node can run rik, and say what to fix", "", withoutContext(runDoctor)),
		passThrough("store", "Back the controller's store up, restore it", "", runStore),
		&cobra.Command{
			Use: "version", Short: "Print the version", Args: cobra.NoArgs,
			Example: "  rik version",
			Run: func(cmd *cobra.Command, _ []string) {
				fmt.Fprintln(cmd.OutOrStdout(), version.String("rik"))
			},
		})
	return root
}

// runFunc runs a subcommand that parses its own arguments, flags
// included, and returns its exit code.
type runFunc func(ctx context.Context, args []string, stdout, stderr io.Writer) int

// withoutContext adapts a subcommand that needs no context.
func withoutContext(fn func(args []string, stdout, stderr io.Writer) int) runFunc {
	return func(_ context.Context, args []string, stdout, stderr io.Writer) int { return fn(args, stdout, stderr) }
}

// passThrough is a command whose arguments, flags included, go to fn.
// usage is its long help ("": short).
func passThrough(name, short, usage string, fn runFunc) *cobra.Command {
	return &cobra.Command{
		Use: name, Short: short, Long: usage,
		Example:            "  rik " + name + " --help",
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if code := fn(cmd.Context(), args, cmd.OutOrStdout(), cmd.ErrOrStderr()); code != 0 {
				return exitCode(code)
			}
			return nil
		},
	}
}

func newDevCommand() *cobra.Command {
	var (
		cfg     dev.Config
		rt      runtimes.Config
		logging cliconf.Logging
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run controller, scheduler and one riklet in this process",
		Long: "rik dev runs a whole cluster in one process on the embedded store: HTTPS with the admin token\n" +
			"printed, mutual TLS between the components (or plaintext with --insecure). As root, the node\n" +
			"offers pods (runc), and functions when it has a guest kernel (--kernel-path).\n\n" +
			"Each flag is also read from the environment (RIK_<FLAG>) and from /etc/rik/dev.yaml (or\n" +
			"--config); precedence: flag, environment, file, default.",
		Example: "  rik dev\n" +
			"  rik dev --insecure --data-dir /var/tmp/rik\n" +
			"  rik dev --kernel-path /var/cache/rik/vmlinux --log-format json",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("rik dev: unexpected arguments: %v", args)}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := rt.Validate(); err != nil {
				return usageError{fmt.Errorf("rik dev: %w", err)}
			}
			if rt.PodCIDR == runtimes.PodCIDRAuto {
				return usageError{errors.New("rik dev: --pod-cidr auto is for the riklets of a fleet: rik dev runs one node")}
			}
			log, err := logging.Logger(cmd.ErrOrStderr())
			if err != nil {
				return usageError{fmt.Errorf("rik dev: %w", err)}
			}
			return runDev(cmd.Context(), cfg, rt, log, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "", "store and node state (default: a new temporary directory)")
	f.StringVar(&cfg.Addr, "listen", "127.0.0.1:5000", "REST API address")
	f.StringVar(&cfg.WorkersAddr, "workers-addr", "127.0.0.1:4995", "scheduler address for riklets")
	f.StringVar(&cfg.ControllersAddr, "controllers-addr", "127.0.0.1:4996", "scheduler address for controllers")
	f.StringVar(&cfg.Hostname, "hostname", "", "node name (default: the host name)")
	f.DurationVar(&cfg.NodeTimeout, "node-timeout", 15*time.Second, "a node silent this long is NotReady")
	f.BoolVar(&cfg.Insecure, "insecure", false, "plaintext everywhere: the API over HTTP without tokens, the components without mutual TLS (default: HTTPS with the admin token printed, mutual TLS with a CA in <data-dir>/pki)")
	logging.AddFlags(f)
	// The quick start serves images and rootfs on 127.0.0.1.
	rt.AllowPrivateFetch = true
	rt.KernelPath = runtimes.KernelAuto // functions run with a fetched kernel, no flag needed
	cliconf.AddGoFlags(cmd, rt.RegisterFlags)
	cliconf.Setup(cmd, cliconf.Options{Component: "dev", FlagAliases: map[string]string{"addr": "listen"}})
	return cmd
}

// runDev runs the cluster of `rik dev` until ctx is done.
func runDev(ctx context.Context, cfg dev.Config, rt runtimes.Config, log *slog.Logger, stdout io.Writer) error {
	if cfg.DataDir == "" {
		dir, err := os.MkdirTemp("", "rik-dev-")
		if err != nil {
			return fmt.Errorf("rik dev: %w", err)
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
	if msg := rt.ResolveKernel(os.DirFS("/"), vmm.DefaultKernelDirs); msg != "" {
		log.Info(msg)
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
		return fmt.Errorf("rik dev: %w", err)
	}
	return nil
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
