// Command rikctl is rik's command-line client.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/rik-org/rik/internal/rikctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := rikctl.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
