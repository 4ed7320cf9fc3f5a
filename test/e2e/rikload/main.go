// Command rikload is a load tool for rik's controller: it sends N
// instances.create requests, C at a time, and reports the throughput and
// the latency percentiles.
//
//	rikload --server https://127.0.0.1:5000 --token rik_... --certificate-authority ca.crt \
//	  --workload web -n 500 -c 16 [--create-workload pod.json] [--cleanup]
//
// The token defaults to $RIK_TOKEN; an --insecure controller needs none.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	cfg := Config{Out: os.Stdout}
	fs := flag.NewFlagSet("rikload", flag.ContinueOnError)
	fs.StringVar(&cfg.Server, "server", "http://127.0.0.1:5000", "controller URL")
	fs.StringVar(&cfg.Workload, "workload", "", "workload id or name the instances belong to (required)")
	fs.StringVar(&cfg.DefinitionFile, "create-workload", "", "create the workload from this JSON definition first")
	fs.IntVar(&cfg.Requests, "n", 100, "number of instances.create requests")
	fs.IntVar(&cfg.Concurrency, "c", 8, "requests in flight")
	fs.IntVar(&cfg.Replicas, "replicas", 1, "replicas per request")
	fs.BoolVar(&cfg.Cleanup, "cleanup", false, "delete the created instances afterwards")
	fs.DurationVar(&cfg.Timeout, "timeout", 30*time.Second, "per-request timeout")
	fs.StringVar(&cfg.Token, "token", os.Getenv("RIK_TOKEN"), "bearer token (default $RIK_TOKEN)")
	fs.StringVar(&cfg.CAFile, "certificate-authority", "", "CA certificate of an https:// controller")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == flag.ErrHelp {
			return
		}
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "rikload: unexpected arguments: %v\n", fs.Args())
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "rikload:", err)
		os.Exit(1)
	}
}
