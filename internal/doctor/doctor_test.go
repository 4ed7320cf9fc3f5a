package doctor

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
	"testing/fstest"
)

// fake is a host in memory: files, executables on PATH, free space.
type fake struct {
	files   fstest.MapFS
	path    map[string]string // executable name -> where it is
	euid    int
	arch    string
	openErr error
	free    map[string]uint64 // directory -> free bytes
}

const release = "6.1.0-18-amd64"

// healthy is a Debian node with everything: v2 cgroups, KVM, modules on
// disk, a fetched kernel, the tools.
func healthy() *fake {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	f := &fake{
		files: fstest.MapFS{
			"proc/sys/net/ipv4/ip_forward":     file("1\n"),
			"proc/self/mountinfo":              file("25 22 0:23 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"),
			"sys/fs/cgroup/cgroup.controllers": file("cpuset cpu io memory hugetlb pids rdma misc\n"),
			"proc/cpuinfo":                     file("processor\t: 0\nflags\t\t: fpu vme vmx sse\n"),
			"dev/kvm":                          &fstest.MapFile{Mode: fs.ModeDevice | fs.ModeCharDevice | 0o660},
			"proc/modules":                     file("bridge 311296 0 - Live 0x0\nstp 16384 1 bridge, Live 0x0\n"),
			"lib/modules/" + release + "/modules.dep": file(strings.Join([]string{
				"kernel/drivers/net/veth.ko.xz:", "kernel/drivers/net/tun.ko.xz:",
				"kernel/net/netfilter/nf_tables.ko.xz: kernel/net/netfilter/nfnetlink.ko.xz",
				"kernel/net/netfilter/nf_nat.ko.xz:", "kernel/net/netfilter/xt_addrtype.ko.xz:",
				"kernel/net/netfilter/xt_comment.ko.xz:", "kernel/net/netfilter/xt_conntrack.ko.xz:",
				"kernel/net/netfilter/xt_multiport.ko.xz:", "kernel/net/netfilter/xt_MASQUERADE.ko.xz:",
				"kernel/net/netfilter/nft_chain_nat.ko.xz:", "kernel/net/netfilter/nft_nat.ko.xz:",
				"kernel/net/netfilter/nft_ct.ko.xz:", "kernel/net/netfilter/nft_masq.ko.xz:",
				"kernel/net/ipv4/netfilter/nft_fib_ipv4.ko.xz:", "kernel/net/ipv4/netfilter/nft_reject_ipv4.ko.xz:",
			}, "\n")),
			"lib/modules/" + release + "/modules.builtin":             file("kernel/net/ipv4/ip_tables.ko\n"),
			"var/cache/rik/kernel/boot/vmlinuz-6.1.0-18-cloud-amd64":  file("k"),
			"var/cache/rik/kernel/lib/modules/6.1.0-18-cloud-amd64/m": file("m"),
			"var/lib/rik/data/rik.db":                                 file(""),
			"var/lib/riklet/ledger.json":                              file("{}"),
			"usr/bin/rik":                                             file("rik"),
			"usr/bin/rik-init":                                        file("init"),
		},
		path: map[string]string{
			"runc": "/usr/sbin/runc", "iptables": "/usr/sbin/iptables", "iptables-restore": "/usr/sbin/iptables-restore",
			"qemu-system-x86_64": "/usr/bin/qemu-system-x86_64", "xz": "/usr/bin/xz", "mke2fs": "/usr/sbin/mke2fs",
		},
		arch: "amd64",
		free: map[string]uint64{"/var/lib/rik": 40 << 30, "/var/lib/riklet": 40 << 30, "/var": 40 << 30},
	}
	return f
}

func (f *fake) host() Host {
	return Host{
		FS: f.files,
		LookPath: func(n string) (string, error) {
			if p, ok := f.path[n]; ok {
				return p, nil
			}
			return "", errors.New("executable file not found in $PATH")
		},
		Euid:       f.euid,
		Arch:       f.arch,
		Release:    release,
		Executable: "/usr/bin/rik",
		OpenRW:     func(string) error { return f.openErr },
		Free: func(p string) (uint64, error) {
			if n, ok := f.free[p]; ok {
				return n, nil
			}
			return 0, errors.New("statfs " + p + ": no such file")
		},
	}
}

func options() Options {
	return Options{
		Pods: true, Runc: "runc",
		KernelDirs:  []string{"/var/cache/rik/kernel", "/var/cache/rik-test/kernel"},
		FetchKernel: "/usr/share/rik/fetch-kernel.sh",
		StateDirs:   []string{"/var/lib/rik", "/var/lib/riklet"},
	}
}

func gz(s string) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(s))
	zw.Close()
	return b.Bytes()
}

// want is the expected outcome of one check.
type want struct {
	status Status
	detail string // substring of Detail
	fix    string // substring of Fix
}

func TestRun(t *testing.T) {
	tests := []struct {
		name   string
		change func(*fake, *Options)
		want   map[string]want // the checks not listed must be OK
		failed bool
	}{
		{name: "healthy", change: func(*fake, *Options) {}},
		{name: "no runc, pods required", change: func(f *fake, _ *Options) { delete(f.path, "runc") },
			want: map[string]want{"runc": {Fail, "runc not found", "apt-get install -y runc"}}, failed: true},
		{name: "no runc, pods not required", change: func(f *fake, o *Options) { delete(f.path, "runc"); o.Pods = false },
			want: map[string]want{"runc": {Warn, "runc not found", "apt-get install -y runc"}}},
		{name: "no iptables, nftables usable", change: func(f *fake, _ *Options) {
			delete(f.path, "iptables")
			delete(f.path, "iptables-restore")
		}, want: map[string]want{"firewall": {OK, "nftables, over netlink: nf_tables, nf_nat, nft_chain_nat", ""}}},
		{name: "iptables-restore missing, --firewall iptables", change: func(f *fake, o *Options) {
			delete(f.path, "iptables-restore")
			o.Firewall = "iptables"
		}, want: map[string]want{"firewall": {Fail, "iptables: iptables-restore not found", "apt-get install -y iptables"}}, failed: true},
		{name: "nft_masq missing: iptables", change: func(f *fake, _ *Options) {
			dep := f.files["lib/modules/"+release+"/modules.dep"]
			dep.Data = bytes.ReplaceAll(dep.Data, []byte("nft_masq"), []byte("nft_masqx"))
		}, want: map[string]want{"firewall": {OK, "iptables (/usr/sbin/iptables, /usr/sbin/iptables-restore; nf_tables, nf_nat, xt_addrtype, xt_comment, xt_conntrack, xt_multiport, xt_MASQUERADE); nftables: nft_masq is neither loaded nor in", ""}}},
		{name: "nft_masq missing, --firewall nftables", change: func(f *fake, o *Options) {
			dep := f.files["lib/modules/"+release+"/modules.dep"]
			dep.Data = bytes.ReplaceAll(dep.Data, []byte("nft_masq"), []byte("nft_masqx"))
			o.Firewall = "nftables"
		}, want: map[string]want{"firewall": {Fail, "nftables: nft_masq is neither loaded nor in", "linux-image-" + release}}, failed: true},
		{name: "neither backend", change: func(f *fake, _ *Options) {
			dep := f.files["lib/modules/"+release+"/modules.dep"]
			dep.Data = bytes.ReplaceAll(dep.Data, []byte("nft_ct"), []byte("nft_ctx"))
			delete(f.path, "iptables")
		}, want: map[string]want{"firewall": {Fail, "neither backend works: nftables: nft_ct is neither loaded nor in /lib/modules/" + release + "; iptables: iptables not found", "apt-get install -y iptables"}}, failed: true},
		{name: "neither backend, pods and functions not required", change: func(f *fake, o *Options) {
			delete(f.path, "iptables")
			f.files["lib/modules/"+release+"/modules.dep"].Data = []byte("kernel/drivers/net/veth.ko.xz:\nkernel/drivers/net/tun.ko.xz:\n")
			o.Pods = false
		}, want: map[string]want{
			"firewall": {Warn, "neither backend works", "apt-get install -y iptables"},
			"runc":     {OK, "/usr/sbin/runc", ""},
		}},
		{name: "not root", change: func(f *fake, _ *Options) { f.euid = 1000 },
			want: map[string]want{"root": {Warn, "uid 1000", "sudo rik doctor"}}},
		{name: "module missing from lib/modules", change: func(f *fake, _ *Options) {
			dep := f.files["lib/modules/"+release+"/modules.dep"]
			dep.Data = bytes.ReplaceAll(dep.Data, []byte("veth"), []byte("vethx"))
		}, want: map[string]want{"kernel: pod network": {Fail, "veth is neither loaded nor in /lib/modules/" + release, "linux-image-" + release}}, failed: true},
		{name: "nf_tables missing but ip_tables built in: iptables-legacy", change: func(f *fake, _ *Options) {
			dep := f.files["lib/modules/"+release+"/modules.dep"]
			dep.Data = bytes.ReplaceAll(dep.Data, []byte("nf_tables"), []byte("nf_tablez"))
		}, want: map[string]want{"firewall": {OK, "iptables (", ""}}},
		{name: "kernel config says built in (no lib/modules)", change: func(f *fake, _ *Options) {
			delete(f.files, "lib/modules/"+release+"/modules.dep")
			delete(f.files, "lib/modules/"+release+"/modules.builtin")
			f.files["proc/config.gz"] = &fstest.MapFile{Data: gz(allConfig("y"))}
		}},
		{name: "kernel config: module without files, feature absent", change: func(f *fake, _ *Options) {
			delete(f.files, "lib/modules/"+release+"/modules.dep")
			delete(f.files, "lib/modules/"+release+"/modules.builtin")
			cfg := strings.Replace(allConfig("y"), "CONFIG_TUN=y", "CONFIG_TUN=m", 1)
			cfg = strings.Replace(cfg, "CONFIG_VETH=y\n", "", 1)
			f.files["boot/config-"+release] = &fstest.MapFile{Data: []byte(cfg)}
		}, want: map[string]want{
			"kernel: pod network":      {Fail, "built without CONFIG_VETH (veth)", ""},
			"kernel: function network": {Warn, "tun is a module that /lib/modules/" + release + " lacks", ""},
		}, failed: true},
		{name: "kernel unknown", change: func(f *fake, _ *Options) {
			delete(f.files, "lib/modules/"+release+"/modules.dep")
			delete(f.files, "lib/modules/"+release+"/modules.builtin")
			delete(f.files, "proc/modules")
		}, want: map[string]want{
			"kernel: pod network":      {Warn, "cannot tell whether the kernel has bridge, veth", ""},
			"kernel: function network": {Warn, "cannot tell", ""},
			"firewall":                 {Warn, "neither backend works: nftables: cannot tell", ""},
		}},
		{name: "ip_forward off", change: func(f *fake, _ *Options) { f.files["proc/sys/net/ipv4/ip_forward"].Data = []byte("0\n") },
			want: map[string]want{"ip_forward": {Warn, "the riklet turns it on", "sysctl -w net.ipv4.ip_forward=1"}}},
		{name: "cgroup v2 without memory", change: func(f *fake, _ *Options) {
			f.files["sys/fs/cgroup/cgroup.controllers"].Data = []byte("cpu pids\n")
		}, want: map[string]want{"cgroups": {Fail, "v2 without the memory controller", "cgroup_enable=memory"}}, failed: true},
		{name: "cgroup v1 hierarchies", change: func(f *fake, _ *Options) {
			f.files["proc/self/mountinfo"].Data = []byte("31 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n" +
				"34 30 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n35 30 0:35 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n")
		}},
		{name: "no cgroups", change: func(f *fake, _ *Options) { f.files["proc/self/mountinfo"].Data = []byte("") },
			want: map[string]want{"cgroups": {Fail, "no cgroup hierarchy", "mount -t cgroup2"}}, failed: true},
		{name: "no /dev/kvm", change: func(f *fake, _ *Options) { delete(f.files, "dev/kvm") },
			want: map[string]want{"kvm": {Warn, "no /dev/kvm", "VT-x/AMD-V"}}},
		{name: "software kvm", change: func(f *fake, _ *Options) { f.files["proc/cpuinfo"].Data = []byte("flags\t: fpu sse\n") },
			want: map[string]want{"kvm": {Warn, "no vmx or svm", "VT-x"}}},
		{name: "kvm closed to QEMU's users", change: func(f *fake, _ *Options) { f.files["dev/kvm"].Mode = fs.ModeDevice | 0o600 },
			want: map[string]want{"kvm": {Warn, "open to neither its group nor others", "chmod 0660 /dev/kvm"}}},
		{name: "kvm not openable", change: func(f *fake, _ *Options) { f.openErr = os.ErrPermission },
			want: map[string]want{"kvm": {Warn, "cannot open /dev/kvm", "as root"}}},
		{name: "no VMM, functions required", change: func(f *fake, o *Options) { delete(f.path, "qemu-system-x86_64"); o.Functions = true },
			want: map[string]want{"vmm": {Fail, "neither qemu-system-x86_64 nor firecracker", "apt-get install -y qemu-system-x86"}}, failed: true},
		{name: "firecracker only", change: func(f *fake, _ *Options) {
			delete(f.path, "qemu-system-x86_64")
			f.path["firecracker"] = "/usr/local/bin/firecracker"
		}},
		{name: "arm64", change: func(f *fake, _ *Options) { f.arch = "arm64" },
			want: map[string]want{"vmm": {Warn, "x86_64 host", ""}}},
		{name: "guest tools missing", change: func(f *fake, _ *Options) { delete(f.path, "xz"); delete(f.path, "mke2fs") },
			want: map[string]want{"guest tools": {Warn, "xz, mke2fs not found", "apt-get install -y xz-utils e2fsprogs"}}},
		{name: "no guest kernel, functions required", change: func(f *fake, o *Options) {
			delete(f.files, "var/cache/rik/kernel/boot/vmlinuz-6.1.0-18-cloud-amd64")
			o.Functions = true
		}, want: map[string]want{"guest kernel": {Fail, "none in /var/cache/rik/kernel or /var/cache/rik-test/kernel", "/usr/share/rik/fetch-kernel.sh /var/cache/rik/kernel"}}, failed: true},
		{name: "guest kernel given, missing", change: func(_ *fake, o *Options) { o.KernelPath = "/srv/vmlinuz" },
			want: map[string]want{"guest kernel": {Warn, "/srv/vmlinuz does not exist", ""}}},
		{name: "guest kernel given", change: func(f *fake, o *Options) {
			o.KernelPath = "/srv/vmlinuz"
			f.files["srv/vmlinuz"] = &fstest.MapFile{Data: []byte("k")}
		}},
		{name: "rik-init on PATH only", change: func(f *fake, _ *Options) {
			delete(f.files, "usr/bin/rik-init")
			f.path["rik-init"] = "/usr/local/bin/rik-init"
		}},
		{name: "no rik-init", change: func(f *fake, _ *Options) { delete(f.files, "usr/bin/rik-init") },
			want: map[string]want{"rik-init": {Warn, "not on PATH nor next to this binary", "make build"}}},
		{name: "disk low, state dir not created", change: func(f *fake, _ *Options) {
			delete(f.files, "var/lib/riklet/ledger.json")
			f.free["/var/lib/rik"] = 1 << 30
			f.free["/var/lib"] = 100 << 20
		}, want: map[string]want{
			"disk /var/lib/rik":    {Warn, "1.0 GiB free", "free space on the filesystem of /var/lib/rik"},
			"disk /var/lib/riklet": {Fail, "100 MiB free (on /var/lib's filesystem", "/var/lib"},
		}, failed: true},
		{name: "disk unreadable", change: func(f *fake, _ *Options) { delete(f.free, "/var/lib/rik") },
			want: map[string]want{"disk /var/lib/rik": {Warn, "cannot read the free space", ""}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, o := healthy(), options()
			tc.change(f, &o)
			rs := Run(f.host(), o)
			seen := map[string]bool{}
			for _, r := range rs {
				seen[r.Check] = true
				w, listed := tc.want[r.Check]
				if !listed {
					if r.Status != OK {
						t.Errorf("%s: %v %q (fix %q), want ok", r.Check, r.Status, r.Detail, r.Fix)
					}
					continue
				}
				if r.Status != w.status || !strings.Contains(r.Detail, w.detail) || !strings.Contains(r.Fix, w.fix) {
					t.Errorf("%s: %v %q (fix %q), want %v with %q (fix with %q)", r.Check, r.Status, r.Detail, r.Fix, w.status, w.detail, w.fix)
				}
			}
			for c := range tc.want {
				if !seen[c] {
					t.Errorf("no check %q", c)
				}
			}
			if got := Failed(rs); got != tc.failed {
				t.Errorf("Failed = %v, want %v", got, tc.failed)
			}
		})
	}
}

// allConfig is a kernel configuration with every symbol rik needs set to v.
func allConfig(v string) string {
	var b strings.Builder
	b.WriteString("# comment\nCONFIG_OTHER=y\n")
	for _, group := range [][]module{podModules, functionModules, nftModules, iptModules} {
		for _, m := range group {
			b.WriteString(m.config + "=" + v + "\n")
		}
	}
	return b.String()
}

func TestWrite(t *testing.T) {
	f, o := healthy(), options()
	delete(f.path, "runc")
	delete(f.path, "qemu-system-x86_64")
	delete(f.path, "xz")
	var out bytes.Buffer
	Write(&out, Run(f.host(), o))
	s := out.String()
	for _, want := range []string{
		"FAIL  runc ",
		"fix: apt-get install -y runc\n",
		"warn  vmm ",
		"ok    cgroups                    v2, controllers cpu, memory, pids\n",
		"1 failed, 2 warnings\n",
		"every missing package at once:\n  apt-get install -y runc qemu-system-x86 xz-utils\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
}

// The real host answers every check without panicking; what it finds
// depends on the machine.
func TestReal(t *testing.T) {
	rs := Run(Real(), options())
	if len(rs) < 10 {
		t.Fatalf("%d results", len(rs))
	}
	for _, r := range rs {
		if r.Check == "" || r.Detail == "" {
			t.Errorf("result without check or detail: %+v", r)
		}
	}
}
