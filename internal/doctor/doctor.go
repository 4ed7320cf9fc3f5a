// Package doctor checks that a host can run a riklet: the tools, kernel
// features, cgroups, KVM, guest kernel and disk space rik needs, and says
// how to fix what is missing. The checks read the host only through Host,
// so they are tested against fake hosts; Real is this machine.
package doctor

import (
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
)

// Status is the outcome of one check.
type Status int

const (
	OK   Status = iota
	Warn        // works, but less well, or only part of rik works
	Fail        // something required is missing
)

func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case Warn:
		return "warn"
	}
	return "FAIL"
}

// Result is the outcome of one check, with what fixes it.
type Result struct {
	Check    string // what was checked: "runc", "cgroups"...
	Status   Status
	Detail   string   // what was found
	Fix      string   // the command that fixes it; "" when OK
	Packages []string // the Debian packages that fix it
}

// Host is what the checks read of a machine.
type Host struct {
	FS         fs.FS                        // the root filesystem ("proc/modules" is /proc/modules)
	LookPath   func(string) (string, error) // finds an executable on PATH
	Euid       int
	Arch       string                            // GOARCH
	Release    string                            // the running kernel's release (uname -r)
	Executable string                            // the running binary: rik-init is looked for next to it
	OpenRW     func(path string) error           // opens a device for reading and writing
	Free       func(path string) (uint64, error) // bytes free for unprivileged users on the filesystem of path
}

// Options say what the node is meant to run and where things are.
type Options struct {
	// Pods and Functions: a need of theirs that is missing fails the
	// check; otherwise it only warns (that runtime is not offered).
	Pods, Functions bool
	Runc            string   // runc binary (riklet --runc)
	Firewall        string   // riklet --firewall: auto (or ""), nftables or iptables
	KernelPath      string   // guest kernel (riklet --kernel-path); "" or "auto": looked for in KernelDirs
	KernelModules   string   // its modules (riklet --kernel-modules)
	KernelDirs      []string // where a fetched kernel is looked for
	FetchKernel     string   // the command that fetches one into a directory
	StateDirs       []string // directories whose free space matters
}

// Run runs every check.
func Run(h Host, o Options) []Result {
	pods, fns := need(o.Pods), need(o.Functions)
	rs := []Result{
		checkRoot(h),
		checkTools(h, "runc", pods, "runs the pods' containers", tool{o.Runc, "runc"}),
	}
	k := readKernel(h)
	rs = append(rs,
		k.check("kernel: pod network", pods, podModules),
		k.check("kernel: function network", fns, functionModules),
		checkFirewall(h, k, o.Firewall, need(o.Pods || o.Functions)),
		checkForward(h),
		checkCgroups(h, pods),
		checkKVM(h),
		checkVMM(h, fns),
		checkTools(h, "guest tools", fns, "build the guest's initramfs and disk",
			tool{"xz", "xz-utils"}, tool{"mke2fs", "e2fsprogs"}),
		checkGuestKernel(h, o, fns),
		checkInit(h, fns),
	)
	for _, d := range o.StateDirs {
		rs = append(rs, checkDisk(h, d))
	}
	return rs
}

// need is the status of a missing need: Fail when required.
func need(required bool) Status {
	if required {
		return Fail
	}
	return Warn
}

// Failed reports whether a required check failed.
func Failed(rs []Result) bool {
	return slices.ContainsFunc(rs, func(r Result) bool { return r.Status == Fail })
}

// Write prints the results, one a line with its fix under it, then a
// summary with one apt-get line for every package missing.
func Write(w io.Writer, rs []Result) {
	var fails, warns int
	var pkgs []string
	for _, r := range rs {
		fmt.Fprintf(w, "%-5s %-26s %s\n", r.Status, r.Check, r.Detail)
		if r.Status == OK {
			continue
		}
		if r.Status == Fail {
			fails++
		} else {
			warns++
		}
		if r.Fix != "" {
			fmt.Fprintf(w, "%-32s fix: %s\n", "", r.Fix)
		}
		for _, p := range r.Packages {
			if !slices.Contains(pkgs, p) {
				pkgs = append(pkgs, p)
			}
		}
	}
	fmt.Fprintf(w, "\n%d failed, %d warnings\n", fails, warns)
	if len(pkgs) > 0 {
		fmt.Fprintf(w, "every missing package at once:\n  apt-get install -y %s\n", strings.Join(pkgs, " "))
	}
}

// aptFix is the fix that installs pkgs.
func aptFix(pkgs ...string) string {
	return "apt-get install -y " + strings.Join(pkgs, " ")
}
