// Command controller runs rik's controller: the REST API and desired state.
//
// Environment: PORT (5000), DATABASE_LOCATION (/var/lib/rik/data/),
// SCHEDULER_URL (http://localhost:4996), RIK_STORE (etcd://h:p,h:p to use
// etcd instead of the embedded store), LOG_LEVEL (debug|info|warn|error).
// Admission (flag, or environment): --rootfs-dir (RIK_ROOTFS_DIRS),
// --reserved-ports (RIK_RESERVED_PORTS), --default-cpu (RIK_DEFAULT_CPU),
// --default-memory (RIK_DEFAULT_MEMORY), --max-instances
// (RIK_MAX_INSTANCES), --max-pending (RIK_MAX_PENDING); see -h.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/rik-org/rik/internal/controller"
	"github.com/rik-org/rik/internal/store/backend"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		os.Exit(1)
	}
}

func run() error {
	admission, err := admissionFlags(flag.CommandLine)
	if err != nil {
		return err
	}
	flag.Parse()
	adm, err := admission()
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
		Admission:     &adm,
	})
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
