// Command controller runs rik's controller: the REST API and desired state.
//
// Environment: PORT (5000), DATABASE_LOCATION (/var/lib/rik/data/),
// SCHEDULER_URL (http://localhost:4996), RIK_STORE (etcd://h:p,h:p to use
// etcd instead of the embedded store), LOG_LEVEL (debug|info|warn|error).
//
// Flags: --tls-cert, --tls-key (its certificate, from `rik ca issue
// controller`), --ca-cert (the cluster CA's): it dials the scheduler over
// TLS with them; --insecure: plaintext.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/rik-org/rik/internal/controller"
	"github.com/rik-org/rik/internal/pki"
	"github.com/rik-org/rik/internal/store/backend"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		os.Exit(1)
	}
}

func run() error {
	var certFile, keyFile, caFile string
	var insecure bool
	fs := flag.NewFlagSet("controller", flag.ContinueOnError)
	fs.StringVar(&certFile, "tls-cert", "", "the controller's certificate (`rik ca issue controller`)")
	fs.StringVar(&keyFile, "tls-key", "", "the controller's key")
	fs.StringVar(&caFile, "ca-cert", "", "the cluster CA's certificate, to verify the scheduler")
	fs.BoolVar(&insecure, "insecure", false, "talk to the scheduler in plaintext, without certificate")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	schedTLS, err := schedulerTLS(certFile, keyFile, caFile, insecure)
	if err != nil {
		return err
	}
	var level slog.Level
	if v := os.Getenv("LOG_LEVEL"); v != "" {
		if err := level.UnmarshalText([]byte(v)); err != nil {
			return fmt.Errorf("LOG_LEVEL %q: %w", v, err)
		}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	port := env("PORT", "5000")
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("PORT %q: must be a port number", port)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	st, err := backend.Open(ctx, env("DATABASE_LOCATION", "/var/lib/rik/data/"), os.Getenv("RIK_STORE"))
	if err != nil {
		return fmt.Errorf("opening store: %w", err)
	}
	defer st.Close()

	return controller.Run(ctx, controller.Config{
		Addr:          ":" + port,
		Store:         st,
		SchedulerAddr: env("SCHEDULER_URL", "http://localhost:4996"),
		Logger:        log,
		SchedulerTLS:  schedTLS,
	})
}

// schedulerTLS is how the controller dials the scheduler: with its
// certificate, verifying the scheduler's against the cluster CA; nil
// (plaintext) when insecure.
func schedulerTLS(certFile, keyFile, caFile string, insecure bool) (*tls.Config, error) {
	if insecure {
		return nil, nil
	}
	if certFile == "" || keyFile == "" || caFile == "" {
		return nil, errors.New("the scheduler needs the controller's certificate: --tls-cert and --tls-key " +
			"(`rik ca issue controller`) and --ca-cert (the cluster CA's); or --insecure for plaintext")
	}
	pair, err := pki.ReadPairFiles(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--ca-cert: %w", err)
	}
	return pki.ClientTLS(pair, caPEM, "")
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
