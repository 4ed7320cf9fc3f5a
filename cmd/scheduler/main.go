// Command scheduler runs rik's scheduler: it places instances on nodes and
// relays orders and statuses between controllers and riklets.
//
// Every flag is also read from RIK_<FLAG> (e.g. RIK_WORKERS_ADDR) and from
// /etc/rik/scheduler.yaml (or --config); see `scheduler --help`. RIK's
// --workersip and --ctrlip stay accepted.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/rik-org/rik/internal/cliconf"
	"github.com/rik-org/rik/internal/pki"
	"github.com/rik-org/rik/internal/scheduler"
)

// DefaultMetricsAddr serves /metrics, /healthz and /readyz: on loopback,
// in plain HTTP and open (elsewhere, /metrics asks for a controller
// certificate).
const DefaultMetricsAddr = "127.0.0.1:4997"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newCommand(func(ctx context.Context, cfg scheduler.Config) error { return scheduler.Run(ctx, cfg) }).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "scheduler:", err)
		os.Exit(1)
	}
}

// newCommand is the scheduler's command line; run is called with the
// configuration it reads.
func newCommand(run func(context.Context, scheduler.Config) error) *cobra.Command {
	var (
		cfg scheduler.Config
		log cliconf.Logging
	)
	cmd := &cobra.Command{
		Use:   "scheduler",
		Short: "rik's scheduler: places instances on nodes, relays orders and statuses",
		Long: "The scheduler places instances on nodes and relays orders (controller to riklet) and\n" +
			"statuses (riklet to controllers). Riklets dial --workers-addr, controllers --controllers-addr,\n" +
			"both over mutual TLS with the cluster CA in --ca-dir (or plaintext with --insecure).\n\n" +
			"Each flag is also read from the environment (RIK_<FLAG>, e.g. RIK_WORKERS_ADDR) and from\n" +
			"/etc/rik/scheduler.yaml (or --config); precedence: flag, environment, file, default.",
		Example: "  scheduler --ca-dir /etc/rik/pki --tls-san sched.example.com\n" +
			"  scheduler --insecure --workers-addr 127.0.0.1:4995 --controllers-addr 127.0.0.1:4996",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := log.Logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			cfg.Logger = l
			return run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.WorkersAddr, "workers-addr", scheduler.DefaultWorkersAddr, "address the riklets connect to")
	f.StringVar(&cfg.ControllersAddr, "controllers-addr", scheduler.DefaultControllersAddr, "address the controllers connect to")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", DefaultMetricsAddr, "serve /metrics, /healthz and /readyz on this address; empty: off. On loopback (or with --insecure): plain HTTP, open. Elsewhere: HTTPS, /metrics only to clients with a controller certificate ('rik ca issue controller')")
	f.DurationVar(&cfg.NodeTimeout, "node-timeout", scheduler.DefaultNodeTimeout, "a node not heard from for this long is lost (nodes heartbeat at a third of it)")
	f.DurationVar(&cfg.NodeGoneAfter, "node-gone-after", scheduler.DefaultNodeGoneAfter, "a node not heard from for this long is gone for good: instances deleted while waiting for it to stop them are TERMINATED")
	f.StringVar(&cfg.Strategy, "strategy", "spread", "placement strategy: spread or binpack")
	f.StringVar(&cfg.CADir, "ca-dir", pki.DefaultDir, "cluster CA directory (ca.crt, ca.key, tokens.json; made by 'rik ca init'): both ports serve TLS and sign node certificates")
	cliconf.AddGoFlags(cmd, func(fs *flag.FlagSet) {
		fs.Var((*pki.Names)(&cfg.TLSNames), "tls-san", "more names or IPs the scheduler is reached by, for its certificate (comma-separated, repeatable)")
	})
	f.DurationVar(&cfg.NodeCertTTL, "node-cert-ttl", pki.NodeLifetime, "lifetime of the node certificates it signs (riklets renew at two thirds)")
	f.BoolVar(&cfg.Insecure, "insecure", false, "serve plaintext and check no certificates (labs, RIK's own clients)")
	log.AddFlags(f)
	cliconf.Setup(cmd, cliconf.Options{
		Component:   "scheduler",
		FlagAliases: map[string]string{"workersip": "workers-addr", "ctrlip": "controllers-addr"},
	})
	return cmd
}
