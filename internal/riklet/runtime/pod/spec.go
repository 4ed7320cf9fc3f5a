package pod

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/rik-org/rik/internal/riklet/image"
	"github.com/rik-org/rik/internal/workload"
)

// DefaultPath is set when neither the image nor the workload sets PATH.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// maskedPaths and readonlyPaths are runc's default spec's.
var maskedPaths = []string{
	"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
	"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
}

var readonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}

// specInput is everything a container's OCI spec is made of.
type specInput struct {
	Image      image.Config
	Container  workload.Container
	Index      int    // of the container in spec.containers, for error paths
	Rootfs     string // bundle-relative or absolute
	Hostname   string
	NetnsPath  string
	CgroupPath string
	PidsLimit  int64
	User       specs.User // resolved from Image.User
	HostsFile  string     // bind-mounted on /etc/hosts if set
	ResolvFile string     // bind-mounted on /etc/resolv.conf if set
	NoSeccomp  bool       // benchmarks only: no seccomp filter
	HostCaps   []string   // the capabilities the node can give (nil: all)
}

// buildSpec returns the OCI runtime spec of one container: Docker's
// default capabilities and seccomp profile, no new privileges, with the
// container's securityContext applied (in.User already holds its user).
// It does no I/O but reading the kernel's version once (uname), which the
// seccomp profile depends on.
func buildSpec(in specInput) (*specs.Spec, error) {
	args, err := processArgs(in.Image, in.Container)
	if err != nil {
		return nil, fmt.Errorf("spec.containers[%d]: %w", in.Index, err)
	}
	cwd := in.Image.WorkingDir
	if cwd == "" {
		cwd = "/"
	}
	sc := in.Container.SecurityContext
	privileged := sc != nil && sc.Privileged
	caps := sc.EffectiveCapabilities()
	if in.HostCaps != nil { // the node cannot give what it does not hold
		caps = slices.DeleteFunc(caps, func(c string) bool { return !slices.Contains(in.HostCaps, c) })
	}
	s := &specs.Spec{
		Version:  "1.0.2",
		Root:     &specs.Root{Path: in.Rootfs, Readonly: sc != nil && sc.ReadOnlyRootFilesystem},
		Hostname: in.Hostname,
		Process: &specs.Process{
			Args: args,
			Env:  mergeEnv(in.Image.Env, in.Container.Env),
			Cwd:  cwd,
			User: in.User,
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
			NoNewPrivileges: true,
		},
		Mounts: defaultMounts(),
		Linux: &specs.Linux{
			CgroupsPath: in.CgroupPath,
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.MountNamespace},
				{Type: specs.NetworkNamespace, Path: in.NetnsPath},
			},
			Resources:     resources(in.Container.Resources, in.PidsLimit),
			MaskedPaths:   maskedPaths,
			ReadonlyPaths: readonlyPaths,
		},
	}
	if privileged {
		s.Linux.MaskedPaths, s.Linux.ReadonlyPaths = nil, nil
	}
	if !privileged && !in.NoSeccomp {
		if s.Linux.Seccomp, err = seccomp.GetDefaultProfile(s); err != nil {
			return nil, fmt.Errorf("spec.containers[%d]: seccomp profile: %w", in.Index, err)
		}
	}
	if in.HostsFile != "" {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/etc/hosts", Type: "bind", Source: in.HostsFile, Options: []string{"rbind", "ro"}})
	}
	if in.ResolvFile != "" {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/etc/resolv.conf", Type: "bind", Source: in.ResolvFile, Options: []string{"rbind", "ro"}})
	}
	return s, nil
}

// processArgs follows Kubernetes: command replaces the entrypoint (and
// drops the image's cmd), args replace the cmd.
func processArgs(img image.Config, c workload.Container) ([]string, error) {
	var args []string
	switch {
	case len(c.Command) > 0:
		args = append(append(args, c.Command...), c.Args...)
	case len(c.Args) > 0:
		args = append(append(args, img.Entrypoint...), c.Args...)
	default:
		args = append(append(args, img.Entrypoint...), img.Cmd...)
	}
	if len(args) == 0 || args[0] == "" {
		return nil, errors.New("command: required (the image has no entrypoint or cmd)")
	}
	return args, nil
}

// mergeEnv overlays the workload's variables on the image's, keeping order.
func mergeEnv(imgEnv []string, env []workload.EnvVar) []string {
	out := workload.OverlayEnv(imgEnv, env)
	if !slices.ContainsFunc(out, func(kv string) bool { return strings.HasPrefix(kv, "PATH=") }) {
		out = append(out, DefaultPath)
	}
	return out
}

func resources(r *workload.Resources, pids int64) *specs.LinuxResources {
	res := &specs.LinuxResources{
		Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
	}
	if pids > 0 {
		res.Pids = &specs.LinuxPids{Limit: &pids}
	}
	if r == nil {
		return res
	}
	if r.Memory > 0 {
		limit := int64(r.Memory) << 20
		res.Memory = &specs.LinuxMemory{Limit: &limit}
	}
	if r.CPU > 0 {
		period := uint64(100000)
		quota := int64(r.CPU) * 100 // millicores * period / 1000
		shares := max(uint64(r.CPU)*1024/1000, 2)
		res.CPU = &specs.LinuxCPU{Period: &period, Quota: &quota, Shares: &shares}
	}
	return res
}

func defaultMounts() []specs.Mount {
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
	}
}

// boundingCaps returns the capabilities in the riklet's own bounding set:
// a container cannot get any other (privileged gets these).
func boundingCaps() ([]string, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil, fmt.Errorf("reading capabilities: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:"); ok {
			return capsFromMask(strings.TrimSpace(v))
		}
	}
	return nil, errors.New("reading capabilities: no CapBnd in /proc/self/status")
}

// capsFromMask names the capabilities of a hex mask as /proc shows them.
func capsFromMask(hex string) ([]string, error) {
	m, err := strconv.ParseUint(hex, 16, 64)
	if err != nil {
		return nil, fmt.Errorf("capability mask %q: %w", hex, err)
	}
	caps := []string{}
	for i, c := range workload.AllCapabilities {
		if m&(1<<i) != 0 {
			caps = append(caps, c)
		}
	}
	return caps, nil
}

// containerUser is the user a container runs as: the image's (imgUser),
// replaced by the securityContext's runAsUser and runAsGroup when set. A
// runAsUser without runAsGroup gets its group as an image uid does (see
// parseUser).
func containerUser(imgUser string, sc *workload.SecurityContext, passwd, group io.Reader) (specs.User, error) {
	if sc != nil && sc.RunAsUser != nil {
		imgUser = strconv.FormatInt(*sc.RunAsUser, 10)
	}
	u, err := parseUser(imgUser, passwd, group)
	if err != nil {
		return specs.User{}, err
	}
	if sc != nil && sc.RunAsGroup != nil {
		u.GID = uint32(*sc.RunAsGroup)
	}
	return u, nil
}

// parseUser resolves an image's user ("", "uid", "uid:gid", "name",
// "name:group") with the image's /etc/passwd and /etc/group (either may be
// nil when the file does not exist).
func parseUser(user string, passwd, group io.Reader) (specs.User, error) {
	if user == "" {
		return specs.User{}, nil
	}
	u, g, hasGroup := strings.Cut(user, ":")
	var out specs.User
	if uid, err := strconv.ParseUint(u, 10, 32); err == nil {
		out.UID = uint32(uid)
		out.GID = out.UID
		if pw, ok := lookup(passwd, func(f []string) bool { return f[2] == u }); ok {
			if gid, err := strconv.ParseUint(pw[3], 10, 32); err == nil {
				out.GID = uint32(gid)
			}
		}
	} else {
		pw, ok := lookup(passwd, func(f []string) bool { return f[0] == u })
		if !ok || len(pw) < 4 {
			return specs.User{}, fmt.Errorf("user %q: not in the image's /etc/passwd", u)
		}
		uid, err1 := strconv.ParseUint(pw[2], 10, 32)
		gid, err2 := strconv.ParseUint(pw[3], 10, 32)
		if err1 != nil || err2 != nil {
			return specs.User{}, fmt.Errorf("user %q: bad /etc/passwd entry", u)
		}
		out.UID, out.GID = uint32(uid), uint32(gid)
	}
	if hasGroup {
		if gid, err := strconv.ParseUint(g, 10, 32); err == nil {
			out.GID = uint32(gid)
		} else {
			gr, ok := lookup(group, func(f []string) bool { return f[0] == g })
			if !ok || len(gr) < 3 {
				return specs.User{}, fmt.Errorf("group %q: not in the image's /etc/group", g)
			}
			gid, err := strconv.ParseUint(gr[2], 10, 32)
			if err != nil {
				return specs.User{}, fmt.Errorf("group %q: bad /etc/group entry", g)
			}
			out.GID = uint32(gid)
		}
	}
	return out, nil
}

// lookup returns the first colon-separated line of r (passwd/group format,
// at least 4 fields for passwd, 3 for group) match accepts.
func lookup(r io.Reader, match func([]string) bool) ([]string, bool) {
	if r == nil {
		return nil, false
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) < 4 {
			f = append(f, make([]string, 4-len(f))...)
		}
		if match(f) {
			return f, true
		}
	}
	return nil, false
}
