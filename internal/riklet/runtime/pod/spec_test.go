package pod

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/rik-org/rik/internal/riklet/image"
	"github.com/rik-org/rik/internal/workload"
)

func TestProcessArgs(t *testing.T) {
	img := image.Config{Entrypoint: []string{"/entry"}, Cmd: []string{"default"}}
	tests := []struct {
		name string
		img  image.Config
		c    workload.Container
		want []string
		err  bool
	}{
		{"image only", img, workload.Container{}, []string{"/entry", "default"}, false},
		{"args replace cmd", img, workload.Container{Args: []string{"a", "b"}}, []string{"/entry", "a", "b"}, false},
		{"command replaces entrypoint and cmd", img, workload.Container{Command: []string{"sh"}}, []string{"sh"}, false},
		{"command and args", img, workload.Container{Command: []string{"sh", "-c"}, Args: []string{"x"}}, []string{"sh", "-c", "x"}, false},
		{"cmd only image", image.Config{Cmd: []string{"sh"}}, workload.Container{}, []string{"sh"}, false},
		{"nothing to run", image.Config{}, workload.Container{}, nil, true},
		{"empty command", image.Config{}, workload.Container{Command: []string{""}}, nil, true},
	}
	for _, tt := range tests {
		got, err := processArgs(tt.img, tt.c)
		if (err != nil) != tt.err || !slices.Equal(got, tt.want) {
			t.Errorf("%s: = %q, %v; want %q (error %v)", tt.name, got, err, tt.want, tt.err)
		}
	}
}

func TestMergeEnv(t *testing.T) {
	tests := []struct {
		img  []string
		env  []workload.EnvVar
		want []string
	}{
		{nil, nil, []string{DefaultPath}},
		{[]string{"PATH=/bin", "A=1"}, []workload.EnvVar{{Name: "A", Value: "2"}, {Name: "B", Value: "x=y"}}, []string{"PATH=/bin", "A=2", "B=x=y"}},
		{[]string{"A=1"}, []workload.EnvVar{{Name: "PATH", Value: "/opt"}}, []string{"A=1", "PATH=/opt"}},
	}
	for _, tt := range tests {
		if got := mergeEnv(tt.img, tt.env); !slices.Equal(got, tt.want) {
			t.Errorf("mergeEnv(%q, %v) = %q, want %q", tt.img, tt.env, got, tt.want)
		}
	}
}

func TestParseUser(t *testing.T) {
	passwd := "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n# comment\nbroken\n"
	group := "root:x:0:\nstaff:x:50:\n"
	tests := []struct {
		user     string
		uid, gid uint32
		err      bool
	}{
		{"", 0, 0, false},
		{"0", 0, 0, false},
		{"1000", 1000, 1001, false}, // gid from passwd
		{"4242", 4242, 4242, false}, // unknown uid: gid = uid
		{"app", 1000, 1001, false},
		{"app:staff", 1000, 50, false},
		{"app:7", 1000, 7, false},
		{"1000:50", 1000, 50, false},
		{"ghost", 0, 0, true},
		{"app:ghosts", 0, 0, true},
		{"broken", 0, 0, true},
	}
	for _, tt := range tests {
		u, err := parseUser(tt.user, strings.NewReader(passwd), strings.NewReader(group))
		if (err != nil) != tt.err || (!tt.err && (u.UID != tt.uid || u.GID != tt.gid)) {
			t.Errorf("parseUser(%q) = %+v, %v; want %d:%d (error %v)", tt.user, u, err, tt.uid, tt.gid, tt.err)
		}
	}
	if _, err := parseUser("app", nil, nil); err == nil {
		t.Error("name without /etc/passwd resolved")
	}
}

func TestBuildSpec(t *testing.T) {
	s, err := buildSpec(specInput{
		Image:      image.Config{Cmd: []string{"sh"}, Env: []string{"PATH=/bin"}, WorkingDir: "/app"},
		Container:  workload.Container{Name: "c", Args: []string{"-c", "true"}, Resources: &workload.Resources{CPU: 500, Memory: 128}},
		Rootfs:     "rootfs",
		Hostname:   "web-1",
		NetnsPath:  "/state/net/netns/id",
		CgroupPath: "/rik/id/c",
		PidsLimit:  100,
		User:       specs.User{UID: 1000, GID: 1000},
		HostsFile:  "/state/pods/id/hosts",
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Process.Args, []string{"-c", "true"}) {
		t.Errorf("args = %q", s.Process.Args)
	}
	if s.Process.Cwd != "/app" || s.Process.User.UID != 1000 || !s.Process.NoNewPrivileges || s.Hostname != "web-1" {
		t.Errorf("process = %+v", s.Process)
	}
	if !slices.Contains(s.Process.Capabilities.Bounding, "CAP_NET_BIND_SERVICE") || slices.Contains(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN") {
		t.Errorf("caps = %v", s.Process.Capabilities.Bounding)
	}
	wantNS := []specs.LinuxNamespace{{Type: "pid"}, {Type: "ipc"}, {Type: "uts"}, {Type: "mount"}, {Type: "network", Path: "/state/net/netns/id"}}
	if d := cmp.Diff(wantNS, s.Linux.Namespaces); d != "" {
		t.Errorf("namespaces (-want +got):\n%s", d)
	}
	r := s.Linux.Resources
	if *r.Memory.Limit != 128<<20 || *r.CPU.Quota != 50000 || *r.CPU.Period != 100000 || *r.CPU.Shares != 512 || *r.Pids.Limit != 100 {
		t.Errorf("resources = mem %d cpu %d/%d shares %d pids %d", *r.Memory.Limit, *r.CPU.Quota, *r.CPU.Period, *r.CPU.Shares, *r.Pids.Limit)
	}
	if len(r.Devices) != 1 || r.Devices[0].Allow {
		t.Errorf("devices = %+v, want deny all", r.Devices)
	}
	if !slices.Contains(s.Linux.MaskedPaths, "/proc/kcore") || !slices.Contains(s.Linux.ReadonlyPaths, "/proc/sys") {
		t.Error("default masked/readonly paths missing")
	}
	if s.Root.Readonly {
		t.Error("root read-only without a securityContext")
	}
	checkDefaultSeccomp(t, s)
	if s.Linux.CgroupsPath != "/rik/id/c" {
		t.Errorf("cgroups path = %q", s.Linux.CgroupsPath)
	}
	var hosts bool
	for _, m := range s.Mounts {
		if m.Destination == "/etc/hosts" && m.Source == "/state/pods/id/hosts" && slices.Contains(m.Options, "ro") {
			hosts = true
		}
		if m.Destination == "/etc/resolv.conf" {
			t.Error("resolv.conf mounted without a file")
		}
	}
	if !hosts {
		t.Error("/etc/hosts not mounted")
	}
	// Tiny CPU requests still get valid shares; no resources: no limits.
	if s := resources(&workload.Resources{CPU: 1}, 0); *s.CPU.Shares != 2 || s.Pids != nil {
		t.Errorf("tiny cpu = %+v", s.CPU)
	}
	if s := resources(nil, 10); s.Memory != nil || s.CPU != nil {
		t.Error("limits without resources")
	}
	if _, err := buildSpec(specInput{Index: 2}); err == nil || !strings.Contains(err.Error(), "spec.containers[2]: command") {
		t.Errorf("no command: %v", err)
	}
}

func TestOpenInRootRefusesSymlinks(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte("g"), 0o644)
	os.Symlink("/etc/passwd", filepath.Join(root, "etc/passwd"))
	os.Symlink("/etc", filepath.Join(root, "lnk"))
	if f, err := openInRoot(root, "etc/group"); err != nil {
		t.Errorf("regular file: %v", err)
	} else {
		f.Close()
	}
	for _, p := range []string{"etc/passwd", "lnk/passwd", "etc/missing", "etc"} {
		if f, err := openInRoot(root, p); err == nil {
			f.Close()
			t.Errorf("openInRoot(%s) succeeded", p)
		}
	}
}

// checkDefaultSeccomp checks s carries Docker's default profile: deny by
// default, the common syscalls allowed, the dangerous ones not.
func checkDefaultSeccomp(t *testing.T, s *specs.Spec) {
	t.Helper()
	sc := s.Linux.Seccomp
	if sc == nil {
		t.Fatal("no seccomp profile")
	}
	if sc.DefaultAction != specs.ActErrno || len(sc.Architectures) == 0 {
		t.Errorf("seccomp default action %s, architectures %v; want errno and the native ones", sc.DefaultAction, sc.Architectures)
	}
	allowed := map[string]bool{}
	for _, sys := range sc.Syscalls {
		if sys.Action == specs.ActAllow && len(sys.Args) == 0 {
			for _, n := range sys.Names {
				allowed[n] = true
			}
		}
	}
	for _, n := range []string{"read", "write", "execve", "openat", "mmap"} {
		if !allowed[n] {
			t.Errorf("seccomp does not allow %s", n)
		}
	}
	for _, n := range []string{"mount", "kexec_load", "init_module", "bpf", "unshare", "reboot"} {
		if allowed[n] {
			t.Errorf("seccomp allows %s without CAP_SYS_ADMIN", n)
		}
	}
}

func TestBuildSpecSecurityContext(t *testing.T) {
	base := specInput{Image: image.Config{Cmd: []string{"sh"}}, Rootfs: "rootfs"}
	uid := int64(1000)
	tests := []struct {
		name  string
		sc    *workload.SecurityContext
		check func(t *testing.T, s *specs.Spec)
	}{
		{"read-only root, caps dropped and added", &workload.SecurityContext{ReadOnlyRootFilesystem: true, RunAsUser: &uid,
			Capabilities: &workload.Capabilities{Drop: []string{"ALL"}, Add: []string{"net_bind_service"}}},
			func(t *testing.T, s *specs.Spec) {
				if !s.Root.Readonly {
					t.Error("root not read-only")
				}
				c := s.Process.Capabilities
				for _, set := range [][]string{c.Bounding, c.Effective, c.Permitted} {
					if !slices.Equal(set, []string{"CAP_NET_BIND_SERVICE"}) {
						t.Errorf("caps = %v, want [CAP_NET_BIND_SERVICE]", set)
					}
				}
				if !s.Process.NoNewPrivileges || len(s.Linux.MaskedPaths) == 0 {
					t.Error("no-new-privileges or masked paths lost")
				}
				checkDefaultSeccomp(t, s)
			}},
		{"added capability widens the seccomp profile", &workload.SecurityContext{Capabilities: &workload.Capabilities{Add: []string{"SYS_ADMIN"}}},
			func(t *testing.T, s *specs.Spec) {
				if !slices.Contains(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN") {
					t.Errorf("caps = %v", s.Process.Capabilities.Bounding)
				}
				var mount bool
				for _, sys := range s.Linux.Seccomp.Syscalls {
					mount = mount || slices.Contains(sys.Names, "mount") && sys.Action == specs.ActAllow
				}
				if !mount {
					t.Error("CAP_SYS_ADMIN given but mount still denied by seccomp")
				}
			}},
		{"privileged", &workload.SecurityContext{Privileged: true},
			func(t *testing.T, s *specs.Spec) {
				if len(s.Process.Capabilities.Bounding) != len(workload.AllCapabilities) {
					t.Errorf("privileged caps = %v", s.Process.Capabilities.Bounding)
				}
				if s.Linux.Seccomp != nil || len(s.Linux.MaskedPaths) != 0 || len(s.Linux.ReadonlyPaths) != 0 {
					t.Error("privileged keeps seccomp or masked paths")
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := base
			in.Container = workload.Container{Name: "c", SecurityContext: tt.sc}
			s, err := buildSpec(in)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, s)
		})
	}
	in := base
	in.NoSeccomp = true
	if s, err := buildSpec(in); err != nil || s.Linux.Seccomp != nil {
		t.Errorf("NoSeccomp: seccomp %v, %v", s.Linux.Seccomp, err)
	}
}

func TestContainerUser(t *testing.T) {
	passwd := "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n"
	id := func(n int64) *int64 { return &n }
	tests := []struct {
		img      string
		sc       *workload.SecurityContext
		uid, gid uint32
	}{
		{"app", nil, 1000, 1001},
		{"app", &workload.SecurityContext{}, 1000, 1001},
		{"app", &workload.SecurityContext{RunAsUser: id(0)}, 0, 0},
		{"", &workload.SecurityContext{RunAsUser: id(1000)}, 1000, 1001}, // group from the image's passwd
		{"", &workload.SecurityContext{RunAsUser: id(4242)}, 4242, 4242},
		{"app", &workload.SecurityContext{RunAsGroup: id(7)}, 1000, 7},
		{"", &workload.SecurityContext{RunAsUser: id(5), RunAsGroup: id(6)}, 5, 6},
	}
	for _, tt := range tests {
		u, err := containerUser(tt.img, tt.sc, strings.NewReader(passwd), nil)
		if err != nil || u.UID != tt.uid || u.GID != tt.gid {
			t.Errorf("containerUser(%q, %+v) = %+v, %v; want %d:%d", tt.img, tt.sc, u, err, tt.uid, tt.gid)
		}
	}
}

func TestCapsFromMask(t *testing.T) {
	tests := []struct {
		mask string
		want []string
		err  bool
	}{
		{"0000000000000000", []string{}, false},
		{"00000000a80425fb", workload.DefaultCapabilities, false},
		{"000001ffffffffff", workload.AllCapabilities, false},
		{"0000000000000401", []string{"CAP_CHOWN", "CAP_NET_BIND_SERVICE"}, false},
		{"zz", nil, true},
	}
	for _, tt := range tests {
		got, err := capsFromMask(tt.mask)
		want := slices.Clone(tt.want)
		slices.SortFunc(want, func(a, b string) int {
			return slices.Index(workload.AllCapabilities, a) - slices.Index(workload.AllCapabilities, b)
		})
		if (err != nil) != tt.err || !tt.err && !slices.Equal(got, want) {
			t.Errorf("capsFromMask(%s) = %v, %v; want %v", tt.mask, got, err, want)
		}
	}
	// The node cannot give what it lacks: the spec keeps only its caps.
	s, err := buildSpec(specInput{Image: image.Config{Cmd: []string{"sh"}}, HostCaps: []string{"CAP_KILL", "CAP_SYS_ADMIN"},
		Container: workload.Container{SecurityContext: &workload.SecurityContext{Privileged: true}}})
	if err != nil || !slices.Equal(s.Process.Capabilities.Bounding, []string{"CAP_KILL", "CAP_SYS_ADMIN"}) {
		t.Errorf("privileged on a node with two caps: %v, %v", s.Process.Capabilities.Bounding, err)
	}
}
