package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rik-org/rik/internal/workload"
)

func TestReadExecConfig(t *testing.T) {
	dir := t.TempDir()
	if c, err := readExecConfig(filepath.Join(dir, "missing")); err != nil || len(c.Args)+len(c.Env) != 0 {
		t.Errorf("missing file: %+v, %v", c, err)
	}
	good := filepath.Join(dir, "good.json")
	os.WriteFile(good, []byte(`{"args":["-p","8080","a b,c"],"env":[{"name":"GREETING","value":"hello world"}]}`), 0o600)
	c, err := readExecConfig(good)
	if err != nil || !slices.Equal(c.Args, []string{"-p", "8080", "a b,c"}) || len(c.Env) != 1 || c.Env[0] != (workload.EnvVar{Name: "GREETING", Value: "hello world"}) {
		t.Errorf("good file: %+v, %v", c, err)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"env":[{"name":"TOKEN","value":"s3cret"`), 0o600)
	if _, err := readExecConfig(bad); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("bad file: %v (must fail without quoting it)", err)
	}
	huge := filepath.Join(dir, "huge.json")
	os.WriteFile(huge, make([]byte, maxExecConfig+1), 0o600)
	if _, err := readExecConfig(huge); err == nil {
		t.Error("oversized file accepted")
	}
}

func TestEntrypointEnv(t *testing.T) {
	got := entrypointEnv([]workload.EnvVar{{Name: "GREETING", Value: "hi=there"}, {Name: "PATH", Value: "/opt/bin"}, {Name: "GREETING", Value: "later"}, {Name: "EMPTY"}})
	want := []string{"PATH=/opt/bin", "HOME=/", "TERM=linux", "GREETING=later", "EMPTY="}
	if !slices.Equal(got, want) {
		t.Errorf("entrypointEnv = %q, want %q", got, want)
	}
	if got := entrypointEnv(nil); len(got) != 3 || got[1] != "HOME=/" {
		t.Errorf("defaults = %q", got)
	}
}
