// Package dev runs a whole rik cluster in one process: controller,
// scheduler and one riklet on loopback, on the embedded store. It is the
// one-command way to try rik (`rik dev`).
package dev

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/rik-org/rik/internal/controller"
	"github.com/rik-org/rik/internal/pki"
	"github.com/rik-org/rik/internal/riklet"
	"github.com/rik-org/rik/internal/scheduler"
	"github.com/rik-org/rik/internal/store/bolt"
)

// Config of a dev cluster.
type Config struct {
	DataDir         string // store and riklet state (required; see Temporary)
	Addr            string // REST API, default 127.0.0.1:5000
	WorkersAddr     string // default 127.0.0.1:4995
	ControllersAddr string // default 127.0.0.1:4996
	Hostname        string // the riklet's node name, default the host name
	Runtimes        []riklet.RuntimeFactory
	Admission       *controller.Admission // the controller's; nil: its default
	NodeTimeout     time.Duration
	Logger          *slog.Logger
	Out             io.Writer // where the welcome text goes
	// Temporary says DataDir is a temporary directory nothing will reuse:
	// on exit the riklet stops every instance, and DataDir is removed once
	// they all stopped (else it is kept, with what still runs).
	Temporary bool
	// Uninstall, when set, is called on exit of a Temporary cluster once
	// the riklet stopped every instance, to remove what the node put on
	// the host (rik's iptables chains and jumps, the pod bridge). It is not
	// called when some instance did not stop, nor when DataDir is kept.
	Uninstall func(ctx context.Context) error
	// Insecure runs every link in plaintext and the API without tokens.
	// By default the cluster has its own CA in DataDir/pki: the scheduler
	// serves TLS, the controller presents a controller certificate and
	// serves HTTPS, the riklet joins with a token made for it, as on a
	// real cluster, and the first admin token is in DataDir/admin.token.
	Insecure bool
	// RikctlConfig is the user's rikctl configuration file, written to
	// point at this cluster unless it exists and rik dev did not write it
	// ("": only DataDir/rikctl.yaml is written).
	RikctlConfig string
	// HostLockDir: see riklet.Config (cmd/rik: riklet.DefaultHostLockDir).
	HostLockDir string
}

// security is what the components of a dev cluster get from its CA.
type security struct {
	caDir        string
	hash         string
	schedulerTLS *tls.Config // the controller's, to the scheduler
	joinToken    string      // the riklet's, revoked on exit
}

// joinTokenTTL bounds the riklet's join token, in case rik dev dies
// before revoking it.
const joinTokenTTL = 10 * time.Minute

// setupSecurity loads or creates the cluster's CA, issues the controller's
// certificate and a join token for the riklet.
func setupSecurity(dataDir string) (*security, error) {
	dir := filepath.Join(dataDir, "pki")
	ca, _, err := pki.LoadOrInit(dir, "rik dev CA")
	if err != nil {
		return nil, err
	}
	cert, key, err := ca.Issue(pki.Template{Role: pki.RoleController, Name: "rik-dev-controller"})
	if err != nil {
		return nil, err
	}
	tlsCfg, err := pki.ClientTLS(pki.Pair{CertPEM: cert, KeyPEM: key}, ca.CertPEM, "")
	if err != nil {
		return nil, err
	}
	tok, _, err := pki.CreateToken(dir, joinTokenTTL, "rik dev node", time.Now())
	if err != nil {
		return nil, err
	}
	return &security{caDir: dir, hash: ca.Hash(), schedulerTLS: tlsCfg, joinToken: tok}, nil
}

// uninstallTimeout bounds the host clean-up on exit.
const uninstallTimeout = 30 * time.Second

func (cfg Config) withDefaults() Config {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:5000"
	}
	if cfg.WorkersAddr == "" {
		cfg.WorkersAddr = "127.0.0.1:4995"
	}
	if cfg.ControllersAddr == "" {
		cfg.ControllersAddr = "127.0.0.1:4996"
	}
	if cfg.Hostname == "" {
		cfg.Hostname, _ = os.Hostname()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	return cfg
}

// Run starts the cluster and blocks until ctx is done or a component fails.
func Run(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	if cfg.DataDir == "" {
		return errors.New("no data dir")
	}
	log := cfg.Logger
	keepData := false // some instances did not stop: keep their state
	if cfg.Temporary {
		defer func() { // after the store is closed
			if keepData {
				log.Warn("keeping the data directory: some instances did not stop", "dir", cfg.DataDir)
			} else if err := removeTemporary(cfg.DataDir); err != nil {
				log.Warn("removing the data directory", "dir", cfg.DataDir, "error", err)
			}
		}()
	}
	c, err := openCluster(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.close()
	rikletErr, err := c.run(ctx)
	keepData = rikletErr != nil
	if cfg.Temporary && !keepData && cfg.Uninstall != nil {
		// ctx may be done by now: the clean-up gets its own deadline.
		uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), uninstallTimeout)
		defer ucancel()
		if err := cfg.Uninstall(uctx); err != nil {
			log.Warn("leaving rik's network on the host (`riklet --uninstall` removes it)", "error", err)
		}
	}
	return err
}

// cluster is what the components of a dev cluster share.
type cluster struct {
	cfg    Config
	ls     listeners
	sec    *security // nil: insecure
	st     *bolt.Store
	apiSec api
	notes  []string // what rik dev wrote for rikctl
}

// openCluster binds every port first (so a port in use is reported before
// anything starts), sets up the CA, opens the store and the API's
// security. On error nothing is left open.
func openCluster(ctx context.Context, cfg Config) (_ *cluster, err error) {
	c := &cluster{cfg: cfg}
	if c.ls, err = bind(cfg); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.ls.close()
			c.close()
		}
	}()
	if !cfg.Insecure {
		if c.sec, err = setupSecurity(cfg.DataDir); err != nil {
			return nil, fmt.Errorf("setting up the cluster CA: %w", err)
		}
	}
	if c.st, err = bolt.Open(cfg.DataDir + "/data"); err != nil {
		return nil, err
	}
	if c.apiSec, err = apiSecurity(ctx, cfg, c.ls.api, c.st); err != nil {
		return nil, err
	}
	if c.notes, err = writeRikctlConfigs(c.apiSec, cfg.DataDir, cfg.RikctlConfig); err != nil {
		cfg.Logger.Warn("writing the rikctl config", "error", err)
	}
	return c, nil
}

// close closes the store and revokes the riklet's join token.
func (c *cluster) close() {
	if c.st != nil {
		c.st.Close()
	}
	if c.sec != nil {
		if err := pki.RevokeToken(c.sec.caDir, c.sec.joinToken); err != nil && !c.cfg.Temporary {
			c.cfg.Logger.Warn("revoking the riklet's join token", "error", err)
		}
	}
}

// run runs the scheduler, the controller and the riklet until ctx is done
// or one of them stops, which stops the others. It returns the riklet's
// own error (it did not stop every instance) and the first failure.
func (c *cluster) run(ctx context.Context) (rikletErr, err error) {
	g, gctx := errgroup.WithContext(ctx)
	gctx, stop := context.WithCancel(gctx)
	defer stop()
	start := func(name string, f func(context.Context) error) {
		g.Go(func() error {
			defer stop() // one component down stops the others
			if err := f(gctx); err != nil && !errors.Is(err, context.Canceled) {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}
	schedCfg, ctrlCfg, rikletCfg := components(c.cfg, c.ls, c.st, c.sec, c.apiSec)
	start("scheduler", func(ctx context.Context) error { return scheduler.Run(ctx, schedCfg) })
	start("controller", func(ctx context.Context) error { return controller.Run(ctx, ctrlCfg) })
	start("riklet", func(ctx context.Context) error {
		rikletErr = riklet.Run(ctx, rikletCfg)
		return rikletErr
	})
	welcome(c.cfg, c.apiSec, c.notes, c.sec)
	err = g.Wait()
	return rikletErr, err
}

// listeners are a dev cluster's ports.
type listeners struct{ api, workers, ctrls net.Listener }

func (l listeners) close() {
	for _, c := range []net.Listener{l.api, l.workers, l.ctrls} {
		if c != nil {
			c.Close()
		}
	}
}

// bind listens on every port of cfg, or on none.
func bind(cfg Config) (listeners, error) {
	var ls listeners
	var err error
	for _, b := range []struct {
		dst        *net.Listener
		addr, what string
	}{{&ls.api, cfg.Addr, "the API"}, {&ls.workers, cfg.WorkersAddr, "workers"}, {&ls.ctrls, cfg.ControllersAddr, "controllers"}} {
		if *b.dst, err = net.Listen("tcp", b.addr); err != nil {
			ls.close()
			return listeners{}, fmt.Errorf("listening for %s on %s: %w", b.what, b.addr, err)
		}
	}
	return ls, nil
}

// components configures the scheduler, the controller and the riklet.
func components(cfg Config, ls listeners, st *bolt.Store, sec *security, apiSec api) (scheduler.Config, controller.Config, riklet.Config) {
	log := cfg.Logger
	schedCfg := scheduler.Config{
		WorkersListener:     ls.workers,
		ControllersListener: ls.ctrls,
		NodeTimeout:         cfg.NodeTimeout,
		RecoveryWindow:      cfg.NodeTimeout,
		Logger:              log.With("component", "scheduler"),
		Insecure:            sec == nil,
	}
	ctrlCfg := controller.Config{
		Listener:       ls.api,
		Store:          st,
		SchedulerAddr:  ls.ctrls.Addr().String(),
		Logger:         log.With("component", "controller"),
		Admission:      cfg.Admission,
		TLS:            apiSec.tls,
		Insecure:       cfg.Insecure,
		AdminTokenFile: filepath.Join(cfg.DataDir, "admin.token"),
	}
	rikletCfg := riklet.Config{
		MasterAddr:  ls.workers.Addr().String(),
		Hostname:    cfg.Hostname,
		StateDir:    cfg.DataDir + "/riklet",
		Runtimes:    cfg.Runtimes,
		Logger:      log.With("component", "riklet"),
		StopOnExit:  cfg.Temporary,
		Insecure:    sec == nil,
		HostLockDir: cfg.HostLockDir,
	}
	if sec != nil {
		schedCfg.CADir = sec.caDir
		ctrlCfg.SchedulerTLS = sec.schedulerTLS
		rikletCfg.JoinToken, rikletCfg.CACertHash = sec.joinToken, sec.hash
	}
	return schedCfg, ctrlCfg, rikletCfg
}

// welcome tells the user what runs where.
func welcome(cfg Config, a api, rikctlNotes []string, sec *security) {
	dataNote := ""
	if cfg.Temporary {
		dataNote = " (temporary: on exit, instances stop and it is removed; --data-dir keeps them)"
	}
	linkNote := "plaintext (--insecure)"
	if sec != nil {
		linkNote = "mutual TLS, CA in " + sec.caDir
	}
	fmt.Fprintf(cfg.Out, `rik dev is running.
  API:        %s  (GET /api/v0/openapi.yaml)
%s  data:       %s%s
  node:       %s
  scheduler:  %s
Try:
  rikctl get nodes
  rikctl create workload -f examples/pod-httpd.json
  rikctl create instance --workload-id httpd
  rikctl get instances -o wide
Stop with Ctrl-C.
`, a.server, a.welcome(rikctlNotes), cfg.DataDir, dataNote, cfg.Hostname, linkNote)
}

// removeTemporary removes dir, unless something is still mounted under it
// (removing would reach into the mount).
func removeTemporary(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("reading mounts: %w", err)
	}
	unescape := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		if mp := unescape.Replace(f[4]); mp == dir || strings.HasPrefix(mp, dir+"/") {
			return fmt.Errorf("%s is still mounted", mp)
		}
	}
	return os.RemoveAll(dir)
}
