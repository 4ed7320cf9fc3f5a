package dev

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rik-org/rik/internal/rikctl"
)

func status(t *testing.T, client *http.Client, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// rik dev serves HTTPS with a token, prints it, and writes rikctl configs
// that reach the API with nothing else set: its own, and the user's when
// there is none or rik dev wrote it; a user's own file is left alone.
func TestDevSecuresTheAPI(t *testing.T) {
	dir := t.TempDir()
	userCfg := filepath.Join(t.TempDir(), ".rik", "config.yaml")
	var token string
	err := withDev(t, Config{DataDir: dir, RikctlConfig: userCfg}, nil, func(url string, client *http.Client, welcome string) {
		if !strings.HasPrefix(url, "https://127.0.0.1:") {
			t.Errorf("API URL %s", url)
		}
		b, err := os.ReadFile(filepath.Join(dir, "admin.token"))
		if err != nil {
			t.Fatal(err)
		}
		token = strings.TrimSpace(string(b))
		if !strings.Contains(welcome, "token:      "+token) || !strings.Contains(welcome, "rikctl:     configured in "+userCfg) {
			t.Errorf("welcome text:\n%s", welcome)
		}
		if code, _ := status(t, client, url+"/api/v0/workloads.list", ""); code != 401 {
			t.Errorf("without a token: %d", code)
		}
		if code, _ := status(t, client, url+"/api/v0/workloads.list", token); code != 200 {
			t.Errorf("with the admin token: %d", code)
		}
		// Both configs work through rikctl, with nothing else given.
		for _, p := range []string{userCfg, filepath.Join(dir, "rikctl.yaml")} {
			fi, err := os.Stat(p)
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("%s: %v %v", p, fi, err)
			}
			var out strings.Builder
			code := rikctl.Run(context.Background(), []string{"get", "workloads"}, rikctl.Env{Stdout: &out, Stderr: &out,
				Getenv: func(k string) string { return map[string]string{"RIKCONFIG": p}[k] }})
			if code != 0 {
				t.Errorf("rikctl with %s: %s", p, out.String())
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}

	// The next run keeps the token and rewrites the config it wrote; a
	// file of the user's is not touched.
	mine := []byte("cluster:\n  server: https://example:5000\n")
	mineCfg := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(mineCfg, mine, 0o600)
	err = withDev(t, Config{DataDir: dir, RikctlConfig: mineCfg}, nil, func(url string, client *http.Client, welcome string) {
		if code, _ := status(t, client, url+"/api/v0/workloads.list", token); code != 200 {
			t.Errorf("the first run's token: %d", code)
		}
		if !strings.Contains(welcome, mineCfg+" is yours: left as it is") {
			t.Errorf("welcome text:\n%s", welcome)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(mineCfg); string(b) != string(mine) {
		t.Errorf("the user's config was changed:\n%s", b)
	}
}

func TestDevInsecure(t *testing.T) {
	dir := t.TempDir()
	userCfg := filepath.Join(t.TempDir(), "config.yaml")
	err := withDev(t, Config{DataDir: dir, Insecure: true, RikctlConfig: userCfg}, nil, func(url string, client *http.Client, welcome string) {
		if !strings.HasPrefix(url, "http://127.0.0.1:") || !strings.Contains(welcome, "--insecure: plain HTTP, no tokens") {
			t.Errorf("API URL %s, welcome:\n%s", url, welcome)
		}
		if code, _ := status(t, client, url+"/api/v0/workloads.list", ""); code != 200 {
			t.Errorf("insecure, no token: %d", code)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(userCfg)
	if !strings.Contains(string(b), "server: http://127.0.0.1:") || strings.Contains(string(b), "token") {
		t.Errorf("insecure rikctl config:\n%s", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "admin.token")); !os.IsNotExist(err) {
		t.Errorf("insecure run wrote an admin token: %v", err)
	}
}
