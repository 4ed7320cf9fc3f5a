// Command controller runs rik's controller: the REST API and desired state.
//
// Environment: PORT (5000), DATABASE_LOCATION (/var/lib/rik/data/),
// SCHEDULER_URL (http://localhost:4996), RIK_STORE (etcd://h:p,h:p to use
// etcd instead of the embedded store), LOG_LEVEL (debug|info|warn|error).
package main

import (
	"context"
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
	})
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
