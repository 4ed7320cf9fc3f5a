// Package packaging checks what `make release` ships, with the tools a
// Debian machine has: the binaries are static (file), the Debian package
// holds what it should (dpkg-deb), its systemd units verify on the files
// it installs (systemd-analyze verify), its sysusers.d and tmpfiles.d
// entries apply (systemd-sysusers, systemd-tmpfiles), the configuration
// files name flags the binaries have, and the control plane's compose file
// is valid (docker-compose config). The binaries come from RIK_BIN_DIR
// (make test sets it); the package is built from them for this machine's
// architecture by tools/release, as `make release` does.
package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/rik-org/rik/internal/testutil"
)

// binaries are the built names of rik's binaries.
var binaries = []string{"controller", "scheduler", "riklet", "rikctl", "rik", "rik-init"}

// repo is the repository root.
func repo(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// binDir returns RIK_BIN_DIR, with every binary in it.
func binDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("RIK_BIN_DIR")
	if dir == "" {
		testutil.Unavailable(t, "RIK_BIN_DIR is not set (make build, then RIK_BIN_DIR=$PWD/bin)")
	}
	for _, b := range binaries {
		testutil.RequireFile(t, filepath.Join(dir, b))
	}
	return dir
}

// command runs name with args in dir and returns its combined output; it
// fails the test when the command fails.
func command(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestBinariesAreStatic(t *testing.T) {
	testutil.RequireTool(t, "file")
	dir := binDir(t)
	for _, b := range binaries {
		out := command(t, dir, "file", "-b", filepath.Join(dir, b))
		if !strings.Contains(out, "statically linked") || strings.Contains(out, "dynamically linked") {
			t.Errorf("%s: %s", b, strings.TrimSpace(out))
		}
	}
}

var (
	debOnce sync.Once
	debPath string
	debErr  string
)

// deb builds the Debian package from RIK_BIN_DIR once, into a directory
// that outlives the test that first asks, and returns its path.
func deb(t *testing.T) string {
	t.Helper()
	testutil.RequireTool(t, "go", "dpkg-deb", "sha256sum")
	bins, root := binDir(t), repo(t)
	debOnce.Do(func() {
		dist, err := os.MkdirTemp("", "rik-release-")
		if err != nil {
			debErr = err.Error()
			return
		}
		cmd := exec.Command("go", "run", "./release", "-root", root, "-dist", dist,
			"-version", "v1.2.3-4-gabcdef0", "-arch", runtime.GOARCH, "-bin", bins, "-mtime", "1700000000")
		cmd.Dir = filepath.Join(root, "tools")
		if out, err := cmd.CombinedOutput(); err != nil {
			debErr = "tools/release: " + err.Error() + "\n" + string(out)
			return
		}
		if out, err := exec.Command("sh", "-c", "cd "+dist+" && sha256sum -c SHA256SUMS").CombinedOutput(); err != nil {
			debErr = "SHA256SUMS: " + err.Error() + "\n" + string(out)
			return
		}
		debPath = filepath.Join(dist, "rik_1.2.3+git4.gabcdef0_"+runtime.GOARCH+".deb")
	})
	if debErr != "" {
		t.Fatal(debErr)
	}
	return debPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if debPath != "" {
		os.RemoveAll(filepath.Dir(debPath))
	}
	os.Exit(code)
}
