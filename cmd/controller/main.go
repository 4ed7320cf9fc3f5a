// Command controller runs rik's controller: the REST API and desired state.
//
// Environment (RIK's): PORT (5000), DATABASE_LOCATION (/var/lib/rik/data/),
// SCHEDULER_URL (http://localhost:4996), RIK_STORE (etcd://h:p,h:p to use
// etcd instead of the embedded store), LOG_LEVEL (debug|info|warn|error).
//
// Flags, each with an environment equivalent (the flag wins):
//
//	--listen ADDR            RIK_LISTEN            API address (default :$PORT)
//	--tls-cert FILE          RIK_TLS_CERT          serving certificate (PEM), with --tls-key
//	--tls-key FILE           RIK_TLS_KEY           its private key (PEM)
//	--ca-cert FILE           RIK_CA_CERT           the cluster CA: the scheduler is dialled over mutual TLS with the pair above
//	--insecure               RIK_INSECURE=true     plain HTTP, no tokens (RIK's clients)
//	--admin-token-file FILE  RIK_ADMIN_TOKEN_FILE  where the first admin token goes (default $DATABASE_LOCATION/admin.token)
//	--max-conns-per-ip N     RIK_MAX_CONNS_PER_IP  open connections per client address (default 100, -1: no cap)
//	--read-timeout D         RIK_READ_TIMEOUT      time to send one request's headers and body (default 30s)
//
// Admission (flag, or environment): --rootfs-dir (RIK_ROOTFS_DIRS),
// --reserved-ports (RIK_RESERVED_PORTS), --default-cpu (RIK_DEFAULT_CPU),
// --default-memory (RIK_DEFAULT_MEMORY), --max-instances
// (RIK_MAX_INSTANCES), --max-pending (RIK_MAX_PENDING); see -h.
//
// Without --insecure the controller needs a certificate: it serves HTTPS
// and asks every client but /healthz and /readyz for a bearer token; it
// dials the scheduler over mutual TLS with the same certificate pair.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/rik-org/rik/internal/controller"
	"github.com/rik-org/rik/internal/pki"
	"github.com/rik-org/rik/internal/store/backend"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "controller:", err)
		os.Exit(1)
	}
}

// options are the controller's settings from flags and environment.
type options struct {
	listen         string
	dataDir        string
	tlsCert        string
	tlsKey         string
	caCert         string
	insecure       bool
	adminTokenFile string
	maxConnsPerIP  int
	readTimeout    time.Duration
	admission      controller.Admission
}

// parseOptions reads flags, with defaults from the environment.
func parseOptions(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	env := func(name, def string) string { return envOr(getenv, name, def) }
	var o options
	port := env("PORT", "5000")
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return o, fmt.Errorf("PORT %q: must be a port number", port)
	}
	o.dataDir = env("DATABASE_LOCATION", "/var/lib/rik/data/")
	insecure, err := envBool(getenv, "RIK_INSECURE")
	if err != nil {
		return o, err
	}
	maxConns, err := envInt(getenv, "RIK_MAX_CONNS_PER_IP", controller.DefaultMaxConnsPerIP)
	if err != nil {
		return o, err
	}
	readTimeout, err := envDuration(getenv, "RIK_READ_TIMEOUT", controller.DefaultReadTimeout)
	if err != nil {
		return o, err
	}
	fs := flag.NewFlagSet("controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.listen, "listen", env("RIK_LISTEN", ":"+port), "API address (env RIK_LISTEN; default :$PORT)")
	fs.StringVar(&o.tlsCert, "tls-cert", getenv("RIK_TLS_CERT"), "serving certificate, PEM (env RIK_TLS_CERT), e.g. from `rik ca issue controller`")
	fs.StringVar(&o.tlsKey, "tls-key", getenv("RIK_TLS_KEY"), "private key of --tls-cert, PEM (env RIK_TLS_KEY)")
	fs.StringVar(&o.caCert, "ca-cert", getenv("RIK_CA_CERT"), "the cluster CA's certificate, to verify the scheduler (env RIK_CA_CERT)")
	fs.BoolVar(&o.insecure, "insecure", insecure, "serve plain HTTP without tokens, for labs and RIK's clients (env RIK_INSECURE=true)")
	fs.StringVar(&o.adminTokenFile, "admin-token-file", env("RIK_ADMIN_TOKEN_FILE", filepath.Join(o.dataDir, "admin.token")),
		"where the first admin token is written, mode 0600 (env RIK_ADMIN_TOKEN_FILE)")
	fs.IntVar(&o.maxConnsPerIP, "max-conns-per-ip", maxConns, "open connections allowed per client address, -1: no cap (env RIK_MAX_CONNS_PER_IP)")
	fs.DurationVar(&o.readTimeout, "read-timeout", readTimeout, "time a client has to send one request, headers and body (env RIK_READ_TIMEOUT)")
	admission, err := admissionFlags(fs)
	if err != nil {
		return o, err
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.admission, err = admission(); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return o, o.check()
}

func (o options) check() error {
	switch {
	case o.readTimeout <= 0:
		return errors.New("--read-timeout: must be positive")
	case o.maxConnsPerIP == 0:
		return errors.New("--max-conns-per-ip: must be positive, or -1 for no cap")
	case o.insecure && (o.tlsCert != "" || o.tlsKey != "" || o.caCert != ""):
		return errors.New("--insecure serves plain HTTP: drop --tls-cert, --tls-key and --ca-cert, or --insecure")
	case o.insecure:
		return nil
	case o.tlsCert == "" && o.tlsKey == "":
		return errors.New("no TLS certificate: pass --tls-cert and --tls-key (e.g. issued by `rik ca issue controller`), " +
			"or --insecure to serve plain HTTP without tokens")
	case o.tlsCert == "" || o.tlsKey == "":
		return errors.New("--tls-cert and --tls-key go together")
	}
	return nil
}

// tlsConfig loads the serving certificate (nil when insecure).
func (o options) tlsConfig() (*tls.Config, error) {
	if o.insecure {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("loading the TLS certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

func run(args []string) error {
	var level slog.Level
	if v := os.Getenv("LOG_LEVEL"); v != "" {
		if err := level.UnmarshalText([]byte(v)); err != nil {
			return fmt.Errorf("LOG_LEVEL %q: %w", v, err)
		}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	o, err := parseOptions(args, os.Getenv, os.Stderr)
	if err != nil {
		return err
	}
	tlsCfg, err := o.tlsConfig()
	if err != nil {
		return err
	}
	schedTLS, err := schedulerTLS(o.tlsCert, o.tlsKey, o.caCert, o.insecure)
	if err != nil {
		return err
	}
	if o.insecure {
		log.Warn("insecure: plain HTTP, no authentication: anyone who reaches " + o.listen + " owns the cluster")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	st, err := backend.Open(ctx, o.dataDir, os.Getenv("RIK_STORE"))
	if err != nil {
		return fmt.Errorf("opening store: %w", err)
	}
	defer st.Close()

	return controller.Run(ctx, controller.Config{
		Addr:           o.listen,
		Store:          st,
		SchedulerAddr:  envOr(os.Getenv, "SCHEDULER_URL", "http://localhost:4996"),
		Logger:         log,
		TLS:            tlsCfg,
		Insecure:       o.insecure,
		AdminTokenFile: o.adminTokenFile,
		Limits:         controller.Limits{MaxConnsPerIP: o.maxConnsPerIP, ReadTimeout: o.readTimeout},
		Admission:      &o.admission,
		SchedulerTLS:   schedTLS,
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

func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

func envBool(getenv func(string) string, name string) (bool, error) {
	v := getenv(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s %q: want true or false", name, v)
	}
	return b, nil
}

func envInt(getenv func(string) string, name string, def int) (int, error) {
	v := getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%s %q: want an integer", name, v)
	}
	return n, nil
}

func envDuration(getenv func(string) string, name string, def time.Duration) (time.Duration, error) {
	v := getenv(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s %q: want a duration such as 30s", name, v)
	}
	return d, nil
}
