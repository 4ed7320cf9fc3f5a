// Command controller runs rik's controller: the REST API and desired state.
//
// Every flag is also read from RIK_<FLAG> (e.g. RIK_LISTEN, RIK_STORE) and
// from /etc/rik/controller.yaml (or --config); RIK's environment (PORT,
// DATABASE_LOCATION, SCHEDULER_URL, LOG_LEVEL) keeps working. See
// `controller --help`.
//
// Without --insecure the controller needs a certificate: it serves HTTPS
// and asks every client but /healthz and /readyz for a bearer token; it
// dials the scheduler over mutual TLS with the same certificate pair.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/rik-org/rik/internal/cliconf"
	"github.com/rik-org/rik/internal/controller"
	"github.com/rik-org/rik/internal/pki"
	"github.com/rik-org/rik/internal/store/backend"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newCommand(os.Getenv, run).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		os.Exit(1)
	}
}

// options are the controller's settings.
type options struct {
	listen         string
	dataDir        string
	store          string
	clusterCIDR    string
	schedulerAddr  string
	tlsCert        string
	tlsKey         string
	caCert         string
	insecure       bool
	adminTokenFile string
	maxConnsPerIP  int
	readTimeout    time.Duration
	admission      controller.Admission
	admissionFn    func() (controller.Admission, error) // reads the admission flags
	log            *slog.Logger
}

// envAliases are RIK's environment variables, read after RIK_<FLAG>.
var envAliases = map[string][]string{
	"data-dir":       {"DATABASE_LOCATION"},
	"scheduler-addr": {"SCHEDULER_URL"},
	"log-level":      {"LOG_LEVEL"},
	"rootfs-dir":     {"RIK_ROOTFS_DIRS"},
}

// newCommand is the controller's command line; run is called with the
// options it reads. getenv is the environment.
func newCommand(getenv func(string) string, run func(context.Context, options) error) *cobra.Command {
	var (
		o       options
		logging cliconf.Logging
	)
	port := envOr(getenv, "PORT", "5000") // RIK's: the default of --listen
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "rik's controller: the REST API and the cluster's desired state",
		Long: "The controller serves the REST API (/api/v0) over HTTPS with bearer tokens (or plain HTTP with\n" +
			"--insecure), keeps the desired state in its store (embedded in --data-dir, or etcd with --store)\n" +
			"and sends orders to the scheduler.\n\n" +
			"Each flag is also read from the environment (RIK_<FLAG>, e.g. RIK_LISTEN; RIK's PORT,\n" +
			"DATABASE_LOCATION, SCHEDULER_URL and LOG_LEVEL too) and from /etc/rik/controller.yaml (or\n" +
			"--config); precedence: flag, environment, file, default.",
		Example: "  controller --tls-cert controller.crt --tls-key controller.key --ca-cert ca.crt --listen 10.0.0.1:5000\n" +
			"  controller --insecure --listen 127.0.0.1:5000 --scheduler-addr 127.0.0.1:4996\n" +
			"  RIK_STORE=etcd://10.0.0.5:2379 controller --config /etc/rik/controller.yaml",
		Args: cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				return fmt.Errorf("PORT %q: must be a port number", port)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.finish(); err != nil {
				return err
			}
			var err error
			if o.log, err = logging.Logger(cmd.ErrOrStderr()); err != nil {
				return err
			}
			return run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", ":"+port, "API address, host:port (RIK's PORT sets the default port)")
	f.StringVar(&o.dataDir, "data-dir", "/var/lib/rik/data/", "directory of the embedded store and the admin token (RIK's DATABASE_LOCATION)")
	f.StringVar(&o.store, "store", "", "etcd://host:port[,host:port] to keep the state in etcd instead of the embedded store")
	f.StringVar(&o.clusterCIDR, "cluster-cidr", "", "IPv4 range the nodes' pod subnets (/24 each) are allocated from, for riklets with --pod-cidr auto (default 10.63.0.0/16)")
	f.StringVar(&o.schedulerAddr, "scheduler-addr", "http://localhost:4996", "the scheduler's address for controllers (RIK's SCHEDULER_URL)")
	f.StringVar(&o.tlsCert, "tls-cert", "", "serving certificate, PEM, e.g. from 'rik ca issue controller'")
	f.StringVar(&o.tlsKey, "tls-key", "", "private key of --tls-cert, PEM")
	f.StringVar(&o.caCert, "ca-cert", "", "the cluster CA's certificate, to verify the scheduler")
	f.BoolVar(&o.insecure, "insecure", false, "serve plain HTTP without tokens, for labs and RIK's clients")
	f.StringVar(&o.adminTokenFile, "admin-token-file", "", "where the first admin token is written, mode 0600 (default <data-dir>/admin.token)")
	f.IntVar(&o.maxConnsPerIP, "max-conns-per-ip", controller.DefaultMaxConnsPerIP, "open connections allowed per client address, -1: no cap")
	f.DurationVar(&o.readTimeout, "read-timeout", controller.DefaultReadTimeout, "time a client has to send one request, headers and body")
	o.admissionFn = admissionFlags(f)
	logging.AddFlags(f)
	cliconf.Setup(cmd, cliconf.Options{Component: "controller", EnvAliases: envAliases, Getenv: getenv})
	return cmd
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

// finish completes the options once the flags are parsed, and checks
// them.
func (o *options) finish() error {
	if o.adminTokenFile == "" {
		o.adminTokenFile = filepath.Join(o.dataDir, "admin.token")
	}
	var err error
	if o.admission, err = o.admissionFn(); err != nil {
		return err
	}
	return o.check()
}

func run(ctx context.Context, o options) error {
	tlsCfg, err := o.tlsConfig()
	if err != nil {
		return err
	}
	schedTLS, err := schedulerTLS(o.tlsCert, o.tlsKey, o.caCert, o.insecure)
	if err != nil {
		return err
	}
	log := o.log
	if o.insecure {
		log.Warn("insecure: plain HTTP, no authentication: anyone who reaches " + o.listen + " owns the cluster")
	}
	cluster, err := parseClusterCIDR(o.clusterCIDR)
	if err != nil {
		return err
	}
	st, err := backend.Open(ctx, o.dataDir, o.store)
	if err != nil {
		return fmt.Errorf("opening store: %w", err)
	}
	defer st.Close()

	return controller.Run(ctx, controller.Config{
		Addr:           o.listen,
		Store:          st,
		SchedulerAddr:  o.schedulerAddr,
		Logger:         log,
		TLS:            tlsCfg,
		Insecure:       o.insecure,
		AdminTokenFile: o.adminTokenFile,
		Limits:         controller.Limits{MaxConnsPerIP: o.maxConnsPerIP, ReadTimeout: o.readTimeout},
		Admission:      &o.admission,
		SchedulerTLS:   schedTLS,
		ClusterCIDR:    cluster,
	})
}

// parseClusterCIDR reads --cluster-cidr: where the nodes' pod subnets are
// taken from (the riklets' --cluster-cidr); "": the default, 10.63.0.0/16.
func parseClusterCIDR(v string) (netip.Prefix, error) {
	if v == "" {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(v)
	if err != nil || !p.Addr().Is4() || p.Bits() > 24 {
		return netip.Prefix{}, fmt.Errorf("--cluster-cidr %q: want an IPv4 range of /24 or larger", v)
	}
	return p.Masked(), nil
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
