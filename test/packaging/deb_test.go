package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/rik-org/rik/internal/testutil"
)

// The package's control fields, contents (with modes) and conffiles.
func TestDebContents(t *testing.T) {
	d := deb(t)
	fields := command(t, "", "dpkg-deb", "-f", d, "Package", "Version", "Architecture")
	for _, want := range []string{"Package: rik\n", "Version: 1.2.3+git4.gabcdef0\n", "Architecture: " + runtime.GOARCH + "\n"} {
		if !strings.Contains(fields, want) {
			t.Errorf("control lacks %q:\n%s", want, fields)
		}
	}
	listing := command(t, "", "dpkg-deb", "-c", d)
	t.Logf("dpkg-deb -c %s:\n%s", filepath.Base(d), listing)
	modes := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(listing), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 {
			modes[strings.TrimPrefix(f[5], ".")] = f[0] + " " + f[1]
		}
	}
	want := map[string]string{
		"/usr/bin/rik-controller": "-rwxr-xr-x root/root",
		"/usr/bin/rik-scheduler":  "-rwxr-xr-x root/root",
		"/usr/bin/riklet":         "-rwxr-xr-x root/root",
		"/usr/bin/rikctl":         "-rwxr-xr-x root/root",
		"/usr/bin/rik":            "-rwxr-xr-x root/root",
		"/usr/bin/rik-init":       "-rwxr-xr-x root/root",
		"/usr/lib/systemd/system/rik-controller.service": "-rw-r--r-- root/root",
		"/usr/lib/systemd/system/rik-scheduler.service":  "-rw-r--r-- root/root",
		"/usr/lib/systemd/system/riklet.service":         "-rw-r--r-- root/root",
		"/usr/lib/sysusers.d/rik.conf":                   "-rw-r--r-- root/root",
		"/usr/lib/tmpfiles.d/rik.conf":                   "-rw-r--r-- root/root",
		"/etc/rik/controller.yaml":                       "-rw-r--r-- root/root",
		"/etc/rik/scheduler.yaml":                        "-rw-r--r-- root/root",
		"/etc/rik/riklet.yaml":                           "-rw-r--r-- root/root",
		"/etc/default/riklet":                            "-rw-r--r-- root/root",
		"/usr/share/rik/fetch-kernel.sh":                 "-rwxr-xr-x root/root",
		"/usr/share/doc/rik/operations.md":               "-rw-r--r-- root/root",
		"/usr/share/doc/rik/copyright":                   "-rw-r--r-- root/root",
	}
	for path, mode := range want {
		if modes[path] != mode {
			t.Errorf("%s: %q, want %q", path, modes[path], mode)
		}
	}
	control := t.TempDir()
	command(t, "", "dpkg-deb", "-e", d, control)
	conffiles, err := os.ReadFile(filepath.Join(control, "conffiles"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"/etc/rik/controller.yaml", "/etc/rik/scheduler.yaml", "/etc/rik/riklet.yaml",
		"/etc/default/rik-controller", "/etc/default/rik-scheduler", "/etc/default/riklet"} {
		if !strings.Contains(string(conffiles), c+"\n") {
			t.Errorf("conffiles lacks %s:\n%s", c, conffiles)
		}
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		command(t, "", "sh", "-n", filepath.Join(control, s))
	}
}

// The postinst, as packaged, creates the rik user and the directories
// with the files the package installs; run here with stand-ins for the
// systemd tools that record how they are called.
func TestPostinst(t *testing.T) {
	control := t.TempDir()
	command(t, "", "dpkg-deb", "-e", deb(t), control)
	stubs, log := t.TempDir(), filepath.Join(t.TempDir(), "calls")
	for _, tool := range []string{"systemd-sysusers", "systemd-tmpfiles", "systemctl", "adduser"} {
		stub := "#!/bin/sh\necho \"$(basename \"$0\") $*\" >> " + log + "\n"
		if err := os.WriteFile(filepath.Join(stubs, tool), []byte(stub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("sh", filepath.Join(control, "postinst"), "configure", "")
	cmd.Env = append(os.Environ(), "PATH="+stubs+":/usr/bin:/bin")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("postinst configure: %v\n%s", err, out)
	}
	calls, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"systemd-sysusers /usr/lib/sysusers.d/rik.conf\n", "systemd-tmpfiles --create /usr/lib/tmpfiles.d/rik.conf\n"} {
		if !strings.Contains(string(calls), want) {
			t.Errorf("postinst did not run %q:\n%s", want, calls)
		}
	}
	// Both files it applies are in the package.
	listing := command(t, "", "dpkg-deb", "-c", deb(t))
	for _, f := range []string{"./usr/lib/sysusers.d/rik.conf", "./usr/lib/tmpfiles.d/rik.conf"} {
		if !strings.Contains(listing, f) {
			t.Errorf("the package lacks %s", f)
		}
	}
}

// installRoot unpacks the package into a new directory, as dpkg would
// install it, with the host's own units beside (the targets rik's units
// name), and returns it.
func installRoot(t *testing.T) string {
	t.Helper()
	d := deb(t)
	root := t.TempDir()
	command(t, "", "dpkg-deb", "-x", d, root)
	units := filepath.Join(root, "usr", "lib", "systemd", "system")
	host := "/usr/lib/systemd/system"
	if _, err := os.Stat(host); err != nil {
		host = "/lib/systemd/system"
	}
	command(t, "", "cp", "-an", host+"/.", units+"/")
	return root
}

// The units, as installed, pass systemd-analyze verify without a word:
// syntax, known settings, the binaries they start exist and execute.
func TestUnitsVerify(t *testing.T) {
	testutil.RequireTool(t, "systemd-analyze")
	root := installRoot(t)
	units := []string{"rik-controller.service", "rik-scheduler.service", "riklet.service"}
	out, err := exec.Command("systemd-analyze", append([]string{"verify", "--root=" + root}, units...)...).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// A unit pointing at a binary the package lacks is caught.
	if err := os.Remove(filepath.Join(root, "usr", "bin", "rik-scheduler")); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command("systemd-analyze", "verify", "--root="+root, "rik-scheduler.service").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "/usr/bin/rik-scheduler") {
		t.Errorf("verify with the binary missing: %v\n%s", err, out)
	}
}

// The controller and the scheduler are confined (systemd's exposure
// score at most 2.0 of 10: no capability, read-only system, system call
// filter...); the riklet, root with every capability by necessity, is
// not held to it. The check fails on a unit that lost its hardening.
func TestUnitsHardened(t *testing.T) {
	testutil.RequireTool(t, "systemd-analyze")
	root := installRoot(t)
	security := func(unit string) (string, error) {
		out, err := exec.Command("systemd-analyze", "security", "--offline=true", "--threshold=20",
			"--root="+root, unit).CombinedOutput()
		return string(out), err
	}
	for _, unit := range []string{"rik-controller.service", "rik-scheduler.service"} {
		if out, err := security(unit); err != nil {
			t.Errorf("%s: %v\n%s", unit, err, out)
		} else {
			t.Log(lastLine(out))
		}
	}
	// The same unit without its [Service] hardening is refused.
	path := filepath.Join(root, "usr", "lib", "systemd", "system", "rik-scheduler.service")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bare, _, _ := strings.Cut(string(b), "# Hardening")
	if err := os.WriteFile(path, []byte(bare+"\n[Install]\nWantedBy=multi-user.target\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := security("rik-scheduler.service"); err == nil {
		t.Errorf("unhardened scheduler passes:\n%s", lastLine(out))
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// What the postinst applies: the rik user (sysusers.d), then the
// directories with their owners and modes (tmpfiles.d).
func TestUsersAndDirectories(t *testing.T) {
	testutil.RequireTool(t, "systemd-sysusers", "systemd-tmpfiles")
	testutil.RequireRoot(t) // to give directories to the rik user
	root := installRoot(t)
	command(t, "", "systemd-sysusers", "--root="+root, "rik.conf")
	passwd, err := os.ReadFile(filepath.Join(root, "etc", "passwd"))
	if err != nil {
		t.Fatal(err)
	}
	var uid int
	for _, line := range strings.Split(string(passwd), "\n") {
		if f := strings.Split(line, ":"); len(f) >= 7 && f[0] == "rik" {
			uid, _ = strconv.Atoi(f[2])
			if f[5] != "/var/lib/rik" || !strings.HasSuffix(f[6], "nologin") {
				t.Errorf("rik user: %q", line)
			}
		}
	}
	if uid == 0 {
		t.Fatalf("no rik user in %s:\n%s", "/etc/passwd", passwd)
	}
	command(t, "", "systemd-tmpfiles", "--root="+root, "--create", "rik.conf")
	for dir, want := range map[string]struct {
		uid  int
		mode os.FileMode
	}{
		"/etc/rik/pki": {uid, 0o700}, "/var/lib/rik/data": {uid, 0o700}, "/var/lib/rik": {0, 0o755},
		"/var/lib/riklet": {0, 0o700}, "/var/lib/rik/rootfs": {0, 0o755}, "/run/rik": {0, 0o755},
	} {
		fi, err := os.Stat(filepath.Join(root, dir))
		if err != nil {
			t.Errorf("%s: %v", dir, err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if !fi.IsDir() || int(st.Uid) != want.uid || fi.Mode().Perm() != want.mode {
			t.Errorf("%s: uid %d mode %v, want uid %d mode %v", dir, st.Uid, fi.Mode().Perm(), want.uid, want.mode)
		}
	}
}
