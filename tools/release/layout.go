package main

import (
	"path/filepath"
	"regexp"
	"strings"
)

// binary is one of rik's binaries as built (bin/<name>) and as installed
// by the package (/usr/bin/<installed>: the generic names of the
// controller and the scheduler get rik's prefix).
type binary struct{ name, installed string }

var binaries = []binary{
	{"controller", "rik-controller"},
	{"scheduler", "rik-scheduler"},
	{"riklet", "riklet"},
	{"rikctl", "rikctl"},
	{"rik", "rik"},
	{"rik-init", "rik-init"},
}

// kind says how a file is packed.
type kind int

const (
	plain  kind = iota
	config      // a conffile: dpkg keeps the admin's changes on upgrade
)

// file is one file of the package: src relative to the repository (or,
// for binaries, to the directory of the built binaries), dst absolute.
type file struct {
	src, dst string
	mode     uint32
	kind     kind
	binary   bool
}

// debFiles lists what the Debian package installs.
func debFiles() []file {
	var fs []file
	for _, b := range binaries {
		fs = append(fs, file{src: b.name, dst: "/usr/bin/" + b.installed, mode: 0o755, binary: true})
	}
	for _, u := range []string{"rik-controller.service", "rik-scheduler.service", "riklet.service"} {
		fs = append(fs, file{src: "packaging/systemd/" + u, dst: "/usr/lib/systemd/system/" + u, mode: 0o644})
	}
	fs = append(fs,
		file{src: "packaging/sysusers.d/rik.conf", dst: "/usr/lib/sysusers.d/rik.conf", mode: 0o644},
		file{src: "packaging/tmpfiles.d/rik.conf", dst: "/usr/lib/tmpfiles.d/rik.conf", mode: 0o644},
	)
	for _, c := range []string{"controller", "scheduler", "riklet"} {
		fs = append(fs, file{src: "packaging/etc/" + c + ".yaml", dst: "/etc/rik/" + c + ".yaml", mode: 0o644, kind: config})
	}
	for _, d := range []string{"rik-controller", "rik-scheduler", "riklet"} {
		fs = append(fs, file{src: "packaging/default/" + d, dst: "/etc/default/" + d, mode: 0o644, kind: config})
	}
	fs = append(fs,
		file{src: "test/kernel/fetch.sh", dst: "/usr/share/rik/fetch-kernel.sh", mode: 0o755},
		file{src: "examples/function-rootfs.sh", dst: "/usr/share/rik/function-rootfs.sh", mode: 0o755},
		file{src: "examples/function-httpd.json", dst: "/usr/share/doc/rik/examples/function-httpd.json", mode: 0o644},
		file{src: "examples/pod-httpd.json", dst: "/usr/share/doc/rik/examples/pod-httpd.json", mode: 0o644},
		file{src: "README.md", dst: "/usr/share/doc/rik/README.md", mode: 0o644},
		file{src: "docs/operations.md", dst: "/usr/share/doc/rik/operations.md", mode: 0o644},
		file{src: "LICENSE", dst: "/usr/share/doc/rik/copyright", mode: 0o644},
	)
	return fs
}

// tarFiles lists what an archive holds, under its top directory: the
// binaries under their built names in bin/, the rest where the repository
// has it (the units, configuration files and scripts in packaging/).
func tarFiles() []file {
	var fs []file
	for _, f := range debFiles() {
		dst := f.src
		if f.binary {
			dst = "bin/" + f.src
		}
		fs = append(fs, file{src: f.src, dst: dst, mode: f.mode, binary: f.binary})
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		fs = append(fs, file{src: "packaging/scripts/" + s, dst: "packaging/scripts/" + s, mode: 0o755})
	}
	return fs
}

// scripts are the Debian maintainer scripts, in the repository.
var scripts = struct{ postinst, prerm, postrm string }{
	"packaging/scripts/postinst", "packaging/scripts/prerm", "packaging/scripts/postrm",
}

var (
	releaseRe  = regexp.MustCompile(`^[0-9]+(\.[0-9]+)+$`)
	describeRe = regexp.MustCompile(`^[0-9]+-g[0-9a-f]+(-dirty)?$`)
	badRe      = regexp.MustCompile(`[^A-Za-z0-9.+~]+`)
	dotsRe     = regexp.MustCompile(`\.\.+`)
)

// debVersion turns a version as `git describe --always --dirty` gives it
// into a Debian one that sorts right:
//
//	v1.2.0                  1.2.0
//	v1.2.0-rc.1             1.2.0~rc.1          (before 1.2.0)
//	v1.2.0-3-gabc1234       1.2.0+git3.gabc1234 (after 1.2.0)
//	9136712-dirty           0.0.0+git9136712.dirty (no tag yet)
func debVersion(v string) string {
	v = strings.TrimPrefix(strings.TrimSpace(v), "v")
	base, rest, _ := strings.Cut(v, "-")
	clean := func(s string) string {
		return strings.Trim(dotsRe.ReplaceAllString(badRe.ReplaceAllString(s, "."), "."), ".")
	}
	switch {
	case !releaseRe.MatchString(base):
		if c := clean(v); c != "" {
			return "0.0.0+git" + c
		}
		return "0.0.0"
	case rest == "":
		return base
	case describeRe.MatchString(rest):
		return base + "+git" + clean(rest)
	}
	return base + "~" + clean(rest)
}

// archiveName is the top directory, and file name, of an archive.
func archiveName(version, arch string) string {
	return "rik_" + badRe.ReplaceAllString(version, "-") + "_linux_" + arch
}

// binDir returns where the binaries of arch are, from a pattern with
// {arch} in it.
func binDir(pattern, arch string) string {
	return filepath.Clean(strings.ReplaceAll(pattern, "{arch}", arch))
}
