// Package cli tests the command lines of rik's binaries as built: --help
// starts nothing and --version prints the build's version, the one set by
// the Makefile's -ldflags.
package cli

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// binaries are rik's commands.
var binaries = []string{"controller", "scheduler", "riklet", "rikctl", "rik", "rik-init"}

// testVersion is stamped into the binaries this test builds itself.
const testVersion = "v0.0.0-clitest"

var (
	buildOnce sync.Once
	binDir    string
	wantVer   string
	buildErr  error
)

// bins returns the directory of the binaries: $RIK_BIN_DIR (built by make,
// whose version is checked to be stamped) or a build of this test's own,
// and the version they should print ("" when any but "dev" will do).
func bins(t *testing.T) (dir, version string) {
	t.Helper()
	buildOnce.Do(func() {
		if binDir = os.Getenv("RIK_BIN_DIR"); binDir != "" {
			return
		}
		binDir, wantVer = filepath.Join(os.TempDir(), fmt.Sprintf("rik-cli-bin-%d", os.Getpid())), testVersion
		pkgs := make([]string, 0, len(binaries))
		for _, b := range binaries {
			pkgs = append(pkgs, "./cmd/"+b)
		}
		cmd := exec.Command("go", append([]string{"build", "-o", binDir + "/",
			"-ldflags", "-X github.com/rik-org/rik/internal/version.Version=" + testVersion}, pkgs...)...)
		cmd.Dir = "../.."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %w: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir, wantVer
}

func TestMain(m *testing.M) {
	code := m.Run()
	if wantVer != "" && binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// runIn runs a binary in an empty directory that is also its HOME and
// TMPDIR, with no other environment but PATH, and returns its output and
// the files it left there. A command that starts a server would not
// return: it is killed after a minute and the test fails.
func runIn(t *testing.T, bin string, args ...string) (stdout, stderr string, left []string) {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TMPDIR=" + dir, "RIK_CONFIG=/dev/null"}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\nstdout: %s\nstderr: %s", filepath.Base(bin), args, err, out.String(), errb.String())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		left = append(left, e.Name())
	}
	return out.String(), errb.String(), left
}

func TestHelpStartsNothing(t *testing.T) {
	dir, _ := bins(t)
	for _, b := range binaries {
		t.Run(b, func(t *testing.T) {
			out, _, left := runIn(t, filepath.Join(dir, b), "--help")
			if !strings.Contains(out, "--help") && !strings.Contains(out, "help") {
				t.Errorf("--help printed no help: %q", out)
			}
			if len(left) > 0 {
				t.Errorf("--help left files: %v", left)
			}
		})
	}
}

func TestVersionFromOneSource(t *testing.T) {
	dir, want := bins(t)
	var seen string
	for _, b := range binaries {
		out, _, _ := runIn(t, filepath.Join(dir, b), "--version")
		prefix := b + " version "
		if !strings.HasPrefix(out, prefix) {
			t.Errorf("%s --version = %q, want %q...", b, out, prefix)
			continue
		}
		v, _, _ := strings.Cut(strings.TrimPrefix(out, prefix), " ")
		switch {
		case want != "" && v != want:
			t.Errorf("%s --version = %q, want version %s", b, out, want)
		case v == "dev":
			t.Errorf("%s --version = %q: the build did not stamp the version (Makefile LDFLAGS)", b, out)
		case seen != "" && v != seen:
			t.Errorf("%s has version %s, others %s", b, v, seen)
		}
		seen = v
	}
	// The version subcommands say the same.
	for _, args := range [][]string{{"rik", "version"}, {"rikctl", "version", "--client"}} {
		out, _, _ := runIn(t, filepath.Join(dir, args[0]), args[1:]...)
		if !strings.Contains(out, " "+seen+" ") {
			t.Errorf("%v = %q, want version %s", args, out, seen)
		}
	}
}
