package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/rik-org/rik/internal/atomicfile"
	"github.com/rik-org/rik/internal/store/backend"
	"github.com/rik-org/rik/internal/store/bolt"
	"github.com/rik-org/rik/internal/store/etcd"
)

const storeUsage = `usage: rik store <command> [flags]

commands:
  backup  --out FILE [--data-dir DIR] [--store etcd://host:port]
          a consistent copy of the controller's store: the bolt file (the
          controller stopped: it holds the file locked) or an etcd snapshot
          (online)
  restore --from FILE [--data-dir DIR] [--force]
          put a bolt backup in place, the controller stopped; an etcd
          snapshot is restored with etcdutl (docs/operations.md)
`

// defaultDataDir is the controller's DATABASE_LOCATION.
const defaultDataDir = "/var/lib/rik/data/"

func runStore(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, storeUsage)
		return 2
	}
	switch args[0] {
	case "backup":
		return storeBackup(ctx, args[1:], stdout, stderr)
	case "restore":
		return storeRestore(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, storeUsage)
		return 0
	}
	fmt.Fprintf(stderr, "rik store: unknown command %q\n%s", args[0], storeUsage)
	return 2
}

// storeFlags registers the flags that find the store, with the
// controller's environment as defaults.
func storeFlags(fs *flag.FlagSet, dataDir, storeURL *string) {
	fs.StringVar(dataDir, "data-dir", envOr("DATABASE_LOCATION", defaultDataDir), "the controller's data directory, holding rik.db (env DATABASE_LOCATION)")
	fs.StringVar(storeURL, "store", os.Getenv("RIK_STORE"), "the controller's store: empty or bolt for the file in --data-dir, etcd://host:port for etcd (env RIK_STORE)")
}

func storeBackup(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var dataDir, storeURL, out string
	fs := flag.NewFlagSet("rik store backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	storeFlags(fs, &dataDir, &storeURL)
	fs.StringVar(&out, "out", "", "file to write the backup to (replaced atomically, mode 0600)")
	if code, ok := parse(fs, args, stderr, 0); !ok {
		return code
	}
	choice, err := backend.Parse(storeURL)
	if err != nil || out == "" {
		fmt.Fprintf(stderr, "rik store backup: %v\n", firstErr(err, errors.New("--out: required")))
		return 2
	}
	var n int64
	var what string
	err = atomicfile.WriteFrom(out, 0o600, func(w io.Writer) error {
		var err error
		if choice.Kind == backend.Etcd {
			what = "etcd snapshot of " + choice.Endpoints[0]
			n, err = etcd.Snapshot(ctx, choice.Endpoints[0], w)
			return err
		}
		what = "bolt store " + filepath.Join(dataDir, bolt.FileName)
		n, err = bolt.Backup(ctx, dataDir, w)
		return err
	})
	if errors.Is(err, bolt.ErrLocked) {
		err = fmt.Errorf("%w: a running controller holds it; stop it for the copy (systemctl stop rik-controller), or run the controllers on etcd for online snapshots", err)
	}
	if err != nil {
		fmt.Fprintf(stderr, "rik store backup: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %d bytes written to %s\n", what, n, out)
	return 0
}

func storeRestore(args []string, stdout, stderr io.Writer) int {
	var dataDir, storeURL, from string
	var force bool
	fs := flag.NewFlagSet("rik store restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	storeFlags(fs, &dataDir, &storeURL)
	fs.StringVar(&from, "from", "", "the backup file (from rik store backup)")
	fs.BoolVar(&force, "force", false, "replace an existing store (kept as rik.db"+bolt.PreRestoreSuffix+")")
	if code, ok := parse(fs, args, stderr, 0); !ok {
		return code
	}
	choice, err := backend.Parse(storeURL)
	if err != nil || from == "" {
		fmt.Fprintf(stderr, "rik store restore: %v\n", firstErr(err, errors.New("--from: required")))
		return 2
	}
	if choice.Kind == backend.Etcd {
		fmt.Fprintf(stderr, "rik store restore: an etcd snapshot is restored by etcd's own tool into a new data directory of each member:\n"+
			"  etcdutl snapshot restore %s --name NAME --data-dir DIR --initial-cluster ... --initial-advertise-peer-urls ...\n"+
			"see docs/operations.md\n", from)
		return 2
	}
	err = bolt.Restore(dataDir, from, force)
	switch {
	case errors.Is(err, bolt.ErrExists):
		err = fmt.Errorf("%w: pass --force to replace it (it is kept as %s%s)", err, bolt.FileName, bolt.PreRestoreSuffix)
	case errors.Is(err, bolt.ErrLocked):
		err = fmt.Errorf("%w: stop the controller first (systemctl stop rik-controller)", err)
	}
	if err != nil {
		fmt.Fprintf(stderr, "rik store restore: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "restored %s from %s; start the controller\n", filepath.Join(dataDir, bolt.FileName), from)
	return 0
}

// firstErr returns err if it is not nil, else alt.
func firstErr(err, alt error) error {
	if err != nil {
		return err
	}
	return alt
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
