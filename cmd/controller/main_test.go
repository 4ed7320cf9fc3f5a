package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/pki"
)

func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		args    []string
		want    func(options) bool
		wantErr string
	}{
		{name: "no certificate", wantErr: "no TLS certificate: pass --tls-cert and --tls-key"},
		{name: "key without cert", args: []string{"--tls-key", "k"}, wantErr: "--tls-cert and --tls-key go together"},
		{name: "insecure with cert", args: []string{"--insecure", "--tls-cert", "c", "--tls-key", "k"}, wantErr: "--insecure serves plain HTTP"},
		{name: "bad PORT", env: map[string]string{"PORT": "http"}, args: []string{"--insecure"}, wantErr: `PORT "http"`},
		{name: "bad RIK_INSECURE", env: map[string]string{"RIK_INSECURE": "maybe"}, wantErr: "RIK_INSECURE"},
		{name: "bad log format", args: []string{"--insecure", "--log-format", "xml"}, wantErr: "--log-format"},
		{name: "zero conns", args: []string{"--insecure", "--max-conns-per-ip", "0"}, wantErr: "--max-conns-per-ip"},
		{name: "arguments", args: []string{"--insecure", "x"}, wantErr: `unknown command "x"`},
		{name: "insecure defaults", args: []string{"--insecure"}, want: func(o options) bool {
			return o.insecure && o.listen == ":5000" && o.adminTokenFile == "/var/lib/rik/data/admin.token" &&
				o.maxConnsPerIP == 100 && o.readTimeout == 30*time.Second
		}},
		{name: "RIK's PORT and DATABASE_LOCATION", env: map[string]string{"PORT": "6000", "DATABASE_LOCATION": "/d", "RIK_INSECURE": "true"},
			want: func(o options) bool {
				return o.listen == ":6000" && o.adminTokenFile == "/d/admin.token" && o.dataDir == "/d"
			}},
		{name: "env", env: map[string]string{"RIK_LISTEN": "127.0.0.1:7000", "RIK_TLS_CERT": "c", "RIK_TLS_KEY": "k",
			"RIK_ADMIN_TOKEN_FILE": "/t", "RIK_MAX_CONNS_PER_IP": "-1", "RIK_READ_TIMEOUT": "5s"},
			want: func(o options) bool {
				return !o.insecure && o.listen == "127.0.0.1:7000" && o.tlsCert == "c" && o.tlsKey == "k" &&
					o.adminTokenFile == "/t" && o.maxConnsPerIP == -1 && o.readTimeout == 5*time.Second
			}},
		{name: "flags win", env: map[string]string{"RIK_LISTEN": "127.0.0.1:7000", "RIK_TLS_CERT": "c", "RIK_TLS_KEY": "k"},
			args: []string{"--listen", ":8000", "--tls-cert", "c2", "--max-conns-per-ip", "5"},
			want: func(o options) bool { return o.listen == ":8000" && o.tlsCert == "c2" && o.maxConnsPerIP == 5 }},
		{name: "RIK's SCHEDULER_URL and RIK_STORE", env: map[string]string{"SCHEDULER_URL": "http://s:4996", "RIK_STORE": "etcd://e:2379"},
			args: []string{"--insecure"},
			want: func(o options) bool { return o.schedulerAddr == "http://s:4996" && o.store == "etcd://e:2379" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseArgs(tc.args, tc.env)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !tc.want(o) {
				t.Fatalf("options %+v, err %v", o, err)
			}
		})
	}
}

// parseArgs runs the command line with env as the environment, and
// returns the options it gives (the file is /dev/null: none).
func parseArgs(args []string, env map[string]string) (options, error) {
	var got options
	cmd := newCommand(func(k string) string { return env[k] }, func(_ context.Context, o options) error { got = o; return nil })
	cmd.SetArgs(append([]string{"--config", "/dev/null"}, args...))
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	return got, cmd.ExecuteContext(context.Background())
}

func TestTLSConfigLoadsPair(t *testing.T) {
	dir := t.TempDir()
	o := options{tlsCert: filepath.Join(dir, "c.crt"), tlsKey: filepath.Join(dir, "c.key")}
	if _, err := o.tlsConfig(); err == nil || !strings.Contains(err.Error(), "loading the TLS certificate") {
		t.Errorf("missing files: %v", err)
	}
	os.WriteFile(o.tlsCert, []byte("junk"), 0o600)
	os.WriteFile(o.tlsKey, []byte("junk"), 0o600)
	if _, err := o.tlsConfig(); err == nil {
		t.Error("junk certificate loaded")
	}
	ca, err := pki.Init(filepath.Join(dir, "ca"), "")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue(pki.Template{Role: pki.RoleController, Name: "controller", DNSNames: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(o.tlsCert, cert, 0o600)
	os.WriteFile(o.tlsKey, key, 0o600)
	if cfg, err := o.tlsConfig(); err != nil || len(cfg.Certificates) != 1 {
		t.Errorf("issued pair: %v %v", cfg, err)
	}
	if cfg, err := (options{insecure: true}).tlsConfig(); cfg != nil || err != nil {
		t.Errorf("insecure: %v %v", cfg, err)
	}
}

func TestClusterCIDR(t *testing.T) {
	for v, ok := range map[string]bool{"": true, "10.63.0.0/16": true, "10.0.0.0/8": true, "10.63.0.0/25": false, "fd00::/48": false, "nope": false} {
		_, err := parseClusterCIDR(v)
		if (err == nil) != ok {
			t.Errorf("RIK_CLUSTER_CIDR=%q: %v, want ok=%v", v, err, ok)
		}
	}
}
