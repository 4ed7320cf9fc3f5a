package doctor

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

// module is a kernel feature rik uses: its module name and the
// configuration symbol that builds it. alt, when set, is another module
// that does as well (nf_tables or ip_tables).
type module struct {
	name, config string
	alt          *module
}

var (
	podModules      = []module{{name: "bridge", config: "CONFIG_BRIDGE"}, {name: "veth", config: "CONFIG_VETH"}}
	functionModules = []module{{name: "tun", config: "CONFIG_TUN"}}
)

// kernelInfo is what the host tells of its kernel's modules. A module the
// kernel loads on demand (all of the above are) needs only to exist.
type kernelInfo struct {
	release   string
	loaded    map[string]bool   // /proc/modules and /sys/module
	builtin   map[string]bool   // lib/modules/<release>/modules.builtin
	available map[string]bool   // lib/modules/<release>/modules.dep
	config    map[string]string // CONFIG_X: y or m; nil when unknown
}

func readKernel(h Host) kernelInfo {
	k := kernelInfo{release: h.Release, loaded: map[string]bool{}}
	if s, err := readFile(h, "/proc/modules"); err == nil {
		for _, line := range strings.Split(s, "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				k.loaded[modName(f[0])] = true
			}
		}
	}
	if ents, err := fs.ReadDir(h.FS, "sys/module"); err == nil {
		for _, e := range ents {
			k.loaded[modName(e.Name())] = true
		}
	}
	dir := path.Join("/lib/modules", h.Release)
	if s, err := readFile(h, path.Join(dir, "modules.builtin")); err == nil {
		k.builtin = moduleFiles(s)
	}
	if s, err := readFile(h, path.Join(dir, "modules.dep")); err == nil {
		k.available = moduleFiles(s)
	}
	k.config = readConfig(h)
	return k
}

// moduleFiles reads the module names of a modules.dep or modules.builtin:
// "kernel/net/bridge/bridge.ko.xz: deps...".
func moduleFiles(s string) map[string]bool {
	out := map[string]bool{}
	for _, line := range strings.Split(s, "\n") {
		file, _, _ := strings.Cut(line, ":")
		base := path.Base(strings.TrimSpace(file))
		if name, _, ok := strings.Cut(base, ".ko"); ok && name != "" {
			out[modName(name)] = true
		}
	}
	return out
}

// modName normalizes a module name: the kernel treats - and _ alike.
func modName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// readConfig reads the kernel configuration from /proc/config.gz or
// /boot/config-<release>; nil when neither is there.
func readConfig(h Host) map[string]string {
	var r io.Reader
	if b, err := fs.ReadFile(h.FS, "proc/config.gz"); err == nil {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil
		}
		r = zr
	} else if s, err := readFile(h, "/boot/config-"+h.Release); err == nil {
		r = strings.NewReader(s)
	} else {
		return nil
	}
	cfg := map[string]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && strings.HasPrefix(k, "CONFIG_") {
			cfg[k] = v
		}
	}
	if sc.Err() != nil {
		return nil
	}
	return cfg
}

// state tells whether m is usable, and if not why; an empty why means
// the host does not say.
func (k kernelInfo) state(m module) (ok bool, why string) {
	n := modName(m.name)
	v := k.config[m.config]
	switch {
	case k.loaded[n] || k.builtin[n] || k.available[n] || v == "y":
		return true, ""
	case v == "m":
		return false, fmt.Sprintf("%s is a module that /lib/modules/%s lacks", m.name, k.release)
	case k.config != nil:
		return false, fmt.Sprintf("the kernel is built without %s (%s)", m.config, m.name)
	case k.available != nil:
		return false, fmt.Sprintf("%s is neither loaded nor in /lib/modules/%s", m.name, k.release)
	}
	return false, ""
}

// check checks a group of modules.
func (k kernelInfo) check(check string, missing Status, mods []module) Result {
	var problems, unknown []string
	for _, m := range mods {
		ok, why := k.state(m)
		if !ok && m.alt != nil {
			ok, _ = k.state(*m.alt)
		}
		switch {
		case ok:
		case why != "":
			problems = append(problems, why)
		default:
			unknown = append(unknown, m.name)
		}
	}
	var names []string
	for _, m := range mods {
		names = append(names, m.name)
	}
	switch {
	case len(problems) > 0:
		return Result{Check: check, Status: missing, Detail: strings.Join(problems, "; "),
			Fix: "install the kernel's modules (apt-get install -y linux-image-" + k.release + ") or boot a Debian stock kernel, which has them"}
	case len(unknown) > 0:
		return Result{Check: check, Status: Warn,
			Detail: "cannot tell whether the kernel has " + strings.Join(unknown, ", ") + " (no /proc/config.gz, /boot/config-" + k.release + " nor /lib/modules/" + k.release + ")"}
	}
	return Result{Check: check, Detail: strings.Join(names, ", ")}
}
