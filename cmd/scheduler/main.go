// Command scheduler runs rik's scheduler: it places instances on nodes and
// relays orders and statuses between controllers and riklets.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/rik-org/rik/internal/pki"
	"github.com/rik-org/rik/internal/scheduler"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "scheduler:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg scheduler.Config
	var level slog.Level
	fs := flag.NewFlagSet("scheduler", flag.ContinueOnError)
	fs.StringVar(&cfg.WorkersAddr, "workersip", scheduler.DefaultWorkersAddr, "address the riklets connect to")
	fs.StringVar(&cfg.ControllersAddr, "ctrlip", scheduler.DefaultControllersAddr, "address the controllers connect to")
	fs.DurationVar(&cfg.NodeTimeout, "node-timeout", scheduler.DefaultNodeTimeout, "a node not heard from for this long is lost (nodes heartbeat at a third of it)")
	fs.DurationVar(&cfg.NodeGoneAfter, "node-gone-after", scheduler.DefaultNodeGoneAfter, "a node not heard from for this long is gone for good: instances deleted while waiting for it to stop them are TERMINATED")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "serve Prometheus metrics at /metrics on this address (e.g. 127.0.0.1:9100); empty: off")
	fs.StringVar(&cfg.Strategy, "strategy", "spread", "placement strategy: spread or binpack")
	fs.TextVar(&level, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	fs.StringVar(&cfg.CADir, "ca-dir", pki.DefaultDir, "cluster CA directory (ca.crt, ca.key, tokens.json; made by `rik ca init`): both ports serve TLS and sign node certificates")
	fs.Var((*pki.Names)(&cfg.TLSNames), "tls-san", "more names or IPs the scheduler is reached by, for its certificate (comma-separated, repeatable)")
	fs.DurationVar(&cfg.NodeCertTTL, "node-cert-ttl", pki.NodeLifetime, "lifetime of the node certificates it signs (riklets renew at two thirds)")
	fs.BoolVar(&cfg.Insecure, "insecure", false, "serve plaintext and check no certificates (labs, RIK's own clients)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == flag.ErrHelp {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return scheduler.Run(ctx, cfg)
}
