package rikctl

import (
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The token comes from --token, else $RIK_TOKEN, else the config's
// user.token, and goes out as a bearer token.
func TestTokenPrecedence(t *testing.T) {
	f, srv := newFakeAPI(t)
	cfg := writeConfig(t, "cluster:\n  server: "+srv.URL+"\nuser:\n  token: from-config\n")
	other := writeConfig(t, "cluster:\n  server: https://elsewhere:5000\nuser:\n  token: for-elsewhere\n")
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{"RIKCONFIG": cfg}, nil, "Bearer from-config"},
		{map[string]string{"RIKCONFIG": cfg, "RIK_TOKEN": "from-env"}, nil, "Bearer from-env"},
		{map[string]string{"RIKCONFIG": cfg, "RIK_TOKEN": "from-env"}, []string{"--token", "from-flag"}, "Bearer from-flag"},
		{nil, []string{"--server", srv.URL}, ""},
		// The file's token goes to the file's server only.
		{map[string]string{"RIKCONFIG": cfg}, []string{"--server", srv.URL + "/"}, "Bearer from-config"},
		{map[string]string{"RIKCONFIG": other}, []string{"--server", srv.URL}, ""},
		{map[string]string{"RIKCONFIG": other, "RIK_TOKEN": "from-env"}, []string{"--server", srv.URL}, "Bearer from-env"},
	} {
		wantOK(t, run(t, tc.env, "", append(tc.args, "get", "nodes")...))
		if got := f.lastRequest(t).Auth; got != tc.want {
			t.Errorf("env %v args %v: Authorization %q, want %q", tc.env, tc.args, got, tc.want)
		}
	}
	wantErr(t, run(t, nil, "", "--server", srv.URL, "--token", "a b", "get", "nodes"), "token: must not contain spaces or newlines")
}

func TestUnauthorizedAndForbidden(t *testing.T) {
	f, srv := newFakeAPI(t)
	f.roles = map[string]string{"admin-tok": "admin", "viewer-tok": "viewer"}
	wantErr(t, runAt(t, srv, "get", "nodes"), "unauthorized: pass --token, set RIK_TOKEN or set user.token in the rikctl config")
	wantErr(t, runAt(t, srv, "--token", "nope", "get", "nodes"), "unauthorized: the controller refused the token (unknown, expired or deleted)")
	wantOK(t, runAt(t, srv, "--token", "viewer-tok", "get", "nodes"))
	wantErr(t, runAt(t, srv, "--token", "viewer-tok", "create", "instance", "--workload-id", "w"),
		"forbidden: this needs the operator role, the token has viewer")
	wantErr(t, runAt(t, srv, "--token", "viewer-tok", "token", "list"), "forbidden: this needs the admin role, the token has viewer")
	// Streams too.
	wantErr(t, runAt(t, srv, "get", "instances", "--watch"), "unauthorized: pass --token, set RIK_TOKEN or set user.token in the rikctl config")
}

// An https:// server with its CA given as a file or inline PEM, by flag
// or config; without it, a message saying how to give it.
func TestHTTPSWithCertificateAuthority(t *testing.T) {
	f := &fakeAPI{}
	srv := httptest.NewTLSServer(f)
	defer srv.Close()
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	os.WriteFile(caFile, []byte(caPEM), 0o600)

	wantOK(t, run(t, nil, "", "--server", srv.URL, "--certificate-authority", caFile, "get", "nodes"))
	inline := writeConfig(t, "cluster:\n  server: "+srv.URL+"\n  certificate-authority: |\n    "+
		strings.ReplaceAll(strings.TrimSpace(caPEM), "\n", "\n    ")+"\n")
	wantOK(t, run(t, map[string]string{"RIKCONFIG": inline}, "", "get", "nodes"))
	byPath := writeConfig(t, `{"cluster":{"name":"x","server":"`+srv.URL+`","certificate-authority":"`+caFile+`"}}`)
	wantOK(t, run(t, map[string]string{"RIKCONFIG": byPath}, "", "get", "nodes"))

	r := run(t, nil, "", "--server", srv.URL, "get", "nodes")
	if r.code != 1 || !strings.Contains(r.stderr, "not signed by a CA rikctl trusts: pass --certificate-authority") {
		t.Errorf("without the CA: %+v", r)
	}
	r = run(t, nil, "", "--server", srv.URL, "--certificate-authority", filepath.Join(t.TempDir(), "none"), "get", "nodes")
	if r.code != 1 || !strings.HasPrefix(r.stderr, "error: reading certificate authority: open ") {
		t.Errorf("missing CA file: %+v", r)
	}
	notPEM := writeConfig(t, "cluster:\n  server: "+srv.URL+"\n  certificate-authority: "+inline+"\n")
	wantErr(t, run(t, map[string]string{"RIKCONFIG": notPEM}, "", "get", "nodes"), "certificate authority: no PEM certificate found")
}

// Plain HTTP sent to the HTTPS port: say to use https://.
func TestHTTPToHTTPSServer(t *testing.T) {
	f := &fakeAPI{}
	srv := httptest.NewTLSServer(f)
	defer srv.Close()
	plain := "http://" + strings.TrimPrefix(srv.URL, "https://")
	wantErr(t, run(t, nil, "", "--server", plain, "get", "nodes"),
		"the controller at "+plain+" serves HTTPS: use an https:// server (with --certificate-authority if its CA is not a system one)")
}

func TestTokenCommands(t *testing.T) {
	f, srv := newFakeAPI(t)
	f.roles = map[string]string{"admin-tok": "admin"}
	r := runAt(t, srv, "--token", "admin-tok", "token", "create", "--role", "viewer", "--ttl", "48h", "--description", "dashboards")
	wantOK(t, r)
	if r.stdout != "rik_t000000001_secret\n" {
		t.Errorf("token create printed %q", r.stdout)
	}
	if got := f.lastRequest(t); got.Body != `{"role":"viewer","description":"dashboards","ttl":"48h"}` {
		t.Errorf("tokens.create body %s", got.Body)
	}
	wantOK(t, runAt(t, srv, "--token", "admin-tok", "token", "create", "--role", "operator"))
	r = runAt(t, srv, "--token", "admin-tok", "token", "list")
	wantOK(t, r)
	want := "" +
		"ID           ROLE       AGE   EXPIRES   DESCRIPTION\n" +
		"t000000001   viewer     0s    in 2d     dashboards\n" +
		"t000000002   operator   0s    never     <none>\n"
	if r.stdout != want {
		t.Errorf("token list:\n%s\nwant:\n%s", r.stdout, want)
	}
	wantOK(t, runAt(t, srv, "--token", "admin-tok", "token", "delete", "t000000001"))
	wantErr(t, runAt(t, srv, "--token", "admin-tok", "token", "delete", "t000000001"), `token "t000000001": not found`)
	if len(f.apiTokens) != 1 {
		t.Errorf("tokens left: %+v", f.apiTokens)
	}
	wantErr(t, runAt(t, srv, "token", "create", "--role", "root"), "--role: must be admin, operator or viewer")
	wantErr(t, runAt(t, srv, "token", "create", "--role", "viewer", "--ttl", "soon"), `--ttl "soon": want a duration such as 24h or 90m`)
}
