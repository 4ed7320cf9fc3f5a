package main

import (
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rik-org/rik/internal/pki"
)

const caUsage = `usage: rik ca <command> [flags]

commands:
  init                  create the cluster CA in --dir and print its hash
  hash                  print the hash of the CA in --dir (riklet --ca-cert-hash)
  issue controller      issue a controller certificate (scheduler client and HTTPS server)
`

const tokenUsage = `usage: rik token <command> [flags]

commands:
  create [--ttl 24h] [--description D]   create a join token for nodes; prints it
  list                                   list the join tokens (secrets are not kept)
  revoke ID                              revoke a join token
`

// caDirFlags registers --dir and its alias --ca-dir on fs.
func caDirFlags(fs *flag.FlagSet, dir *string) {
	fs.StringVar(dir, "dir", pki.DefaultDir, "CA directory")
	fs.StringVar(dir, "ca-dir", pki.DefaultDir, "CA directory (same as --dir)")
}

// parse parses args with fs, printing usage on errors; it returns the
// exit code to use when it is not 0 (ok is false).
func parse(fs *flag.FlagSet, args []string, stderr io.Writer, positional int) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if fs.NArg() != positional {
		fmt.Fprintf(stderr, "%s: want %d argument(s), got %v\n", fs.Name(), positional, fs.Args())
		return 2, false
	}
	return 0, true
}

func runCA(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, caUsage)
		return 2
	}
	switch args[0] {
	case "init":
		return caInit(args[1:], stdout, stderr)
	case "hash":
		return caHash(args[1:], stdout, stderr)
	case "issue":
		if len(args) < 2 || args[1] != "controller" {
			fmt.Fprintf(stderr, "rik ca issue: want `rik ca issue controller`\n%s", caUsage)
			return 2
		}
		return caIssueController(args[2:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, caUsage)
		return 0
	}
	fmt.Fprintf(stderr, "rik ca: unknown command %q\n%s", args[0], caUsage)
	return 2
}

func caInit(args []string, stdout, stderr io.Writer) int {
	var dir, name string
	fs := flag.NewFlagSet("rik ca init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	caDirFlags(fs, &dir)
	fs.StringVar(&name, "name", "rik cluster CA", "the CA's name")
	if code, ok := parse(fs, args, stderr, 0); !ok {
		return code
	}
	ca, err := pki.Init(dir, name)
	if err != nil {
		fmt.Fprintf(stderr, "rik ca init: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, `Cluster CA created in %[1]s:
  %[1]s/ca.crt   its certificate
  %[1]s/ca.key   its key: keep it secret, it signs every certificate of the cluster
CA hash: %[2]s

Next steps:
  1. Run the scheduler where this directory is (it signs node certificates):
       scheduler --ca-dir %[1]s [--tls-san <name or IP it is reached by>]
  2. Issue the controller's certificate and start it with it:
       rik ca issue controller --dir %[1]s --san <controller host or IP> --out /etc/rik/controller
       controller --tls-cert /etc/rik/controller/controller.crt --tls-key /etc/rik/controller/controller.key --ca-cert /etc/rik/controller/ca.crt
  3. For each node, create a join token here and start its riklet with it:
       rik token create --ca-dir %[1]s --ttl 24h
       riklet --master-ip <scheduler>:4995 --join-token <token> --ca-cert-hash %[2]s
`, dir, ca.Hash())
	return 0
}

func caHash(args []string, stdout, stderr io.Writer) int {
	var dir string
	fs := flag.NewFlagSet("rik ca hash", flag.ContinueOnError)
	fs.SetOutput(stderr)
	caDirFlags(fs, &dir)
	if code, ok := parse(fs, args, stderr, 0); !ok {
		return code
	}
	c, err := readCACert(dir)
	if err != nil {
		fmt.Fprintf(stderr, "rik ca hash: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, pki.Hash(c))
	return 0
}

func caIssueController(args []string, stdout, stderr io.Writer) int {
	var (
		dir, name, out string
		sans           pki.Names
		ttl            time.Duration
	)
	fs := flag.NewFlagSet("rik ca issue controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	caDirFlags(fs, &dir)
	fs.StringVar(&name, "name", "controller", "the controller's name (certificate common name, and the files' names)")
	fs.Var(&sans, "san", "names and IPs its REST API is reached by (comma-separated, repeatable)")
	fs.StringVar(&out, "out", ".", "directory to write <name>.crt, <name>.key (0600) and ca.crt to")
	fs.DurationVar(&ttl, "ttl", pki.CertLifetime, "lifetime of the certificate")
	if code, ok := parse(fs, args, stderr, 0); !ok {
		return code
	}
	if err := issueController(dir, name, out, sans, ttl); err != nil {
		fmt.Fprintf(stderr, "rik ca issue controller: %v\n", err)
		return 1
	}
	crt, key := filepath.Join(out, name+".crt"), filepath.Join(out, name+".key")
	fmt.Fprintf(stdout, "Controller certificate written: %s, %s, %s\nStart the controller with:\n  controller --tls-cert %s --tls-key %s --ca-cert %s\n",
		crt, key, filepath.Join(out, pki.CACertFile), crt, key, filepath.Join(out, pki.CACertFile))
	return 0
}

// issueController writes a controller pair and the CA certificate to out.
func issueController(dir, name, out string, sans []string, ttl time.Duration) error {
	if name == "" || strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
		return fmt.Errorf("--name %q: want a plain name", name)
	}
	if ttl <= 0 {
		return errors.New("--ttl: must be positive")
	}
	ca, err := pki.Load(dir)
	if err != nil {
		return err
	}
	t := pki.Template{Role: pki.RoleController, Name: name, TTL: ttl}
	t.AddNames(sans...)
	certPEM, keyPEM, err := ca.Issue(t)
	if err != nil {
		return err
	}
	if err := pki.WritePair(out, name, pki.Pair{CertPEM: certPEM, KeyPEM: keyPEM}); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, pki.CACertFile), ca.CertPEM, 0o644)
}

// readCACert reads the CA certificate of dir (its key is not needed).
func readCACert(dir string) (*x509.Certificate, error) {
	b, err := os.ReadFile(filepath.Join(dir, pki.CACertFile))
	if err != nil {
		return nil, fmt.Errorf("reading the CA certificate: %w", err)
	}
	return pki.ParseCert(b)
}

func runToken(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, tokenUsage)
		return 2
	}
	var dir string
	fs := flag.NewFlagSet("rik token "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&dir, "ca-dir", pki.DefaultDir, "CA directory (the tokens are kept in its tokens.json)")
	switch args[0] {
	case "create":
		ttl := fs.Duration("ttl", 24*time.Hour, "lifetime of the token (0: never expires)")
		desc := fs.String("description", "", "what the token is for")
		if code, ok := parse(fs, args[1:], stderr, 0); !ok {
			return code
		}
		tok, jt, err := pki.CreateToken(dir, *ttl, *desc, time.Now())
		if err != nil {
			fmt.Fprintf(stderr, "rik token create: %v\n", err)
			return 1
		}
		fmt.Fprintln(stdout, tok)
		joinHint(stderr, dir, tok, jt)
		return 0
	case "list":
		if code, ok := parse(fs, args[1:], stderr, 0); !ok {
			return code
		}
		ts, err := pki.ListTokens(dir)
		if err != nil {
			fmt.Fprintf(stderr, "rik token list: %v\n", err)
			return 1
		}
		printTokens(stdout, ts, time.Now())
		return 0
	case "revoke":
		if code, ok := parse(fs, args[1:], stderr, 1); !ok {
			return code
		}
		if err := pki.RevokeToken(dir, fs.Arg(0)); err != nil {
			fmt.Fprintf(stderr, "rik token revoke: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "token %s revoked\n", strings.SplitN(fs.Arg(0), ".", 2)[0])
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, tokenUsage)
		return 0
	}
	fmt.Fprintf(stderr, "rik token: unknown command %q\n%s", args[0], tokenUsage)
	return 2
}

// joinHint tells, on stderr, how a node joins with tok.
func joinHint(w io.Writer, dir, tok string, jt pki.JoinToken) {
	expires := "never expires"
	if !jt.Expires.IsZero() {
		expires = "expires " + jt.Expires.Local().Format(time.RFC3339)
	}
	hash := "<the CA hash: rik ca hash>"
	if c, err := readCACert(dir); err == nil {
		hash = pki.Hash(c)
	}
	fmt.Fprintf(w, "Token %s %s. On the node:\n  riklet --master-ip <scheduler>:4995 --join-token %s --ca-cert-hash %s\n", jt.ID, expires, tok, hash)
}

func printTokens(w io.Writer, ts []pki.JoinToken, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCREATED\tEXPIRES\tSTATUS\tDESCRIPTION")
	for _, t := range ts {
		exp, st := "never", "valid"
		if !t.Expires.IsZero() {
			exp = t.Expires.Local().Format(time.RFC3339)
		}
		if t.Expired(now) {
			st = "expired"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.Created.Local().Format(time.RFC3339), exp, st, t.Description)
	}
	tw.Flush()
}
