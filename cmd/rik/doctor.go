package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/rik-org/rik/internal/doctor"
	"github.com/rik-org/rik/internal/riklet/runtimes"
	"github.com/rik-org/rik/internal/riklet/sdn"
	"github.com/rik-org/rik/internal/riklet/vmm"
)

// installedFetchKernel is test/kernel/fetch.sh as rik's package installs it.
const installedFetchKernel = "/usr/share/rik/fetch-kernel.sh"

// runDoctor checks this node and says what to fix; exit 1 when something
// required is missing.
func runDoctor(args []string, stdout, stderr io.Writer) int {
	o := doctor.Options{KernelDirs: vmm.DefaultKernelDirs}
	var stateDirs string
	fs := flag.NewFlagSet("rik doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&o.Pods, "pods", true, "the node must run pods: what they need fails the check (else it warns)")
	fs.BoolVar(&o.Functions, "functions", false, "the node must run functions: what they need fails the check (else it warns)")
	fs.StringVar(&o.Runc, "runc", "runc", "runc binary (riklet --runc)")
	fs.StringVar(&o.Firewall, "firewall", sdn.FirewallAuto, "firewall backend (riklet --firewall): auto (nftables, else iptables), nftables or iptables")
	fs.StringVar(&o.KernelPath, "kernel-path", runtimes.KernelAuto, "guest kernel (riklet --kernel-path); auto: looked for in "+strings.Join(vmm.DefaultKernelDirs, " and "))
	fs.StringVar(&o.KernelModules, "kernel-modules", "", "its modules directory (riklet --kernel-modules)")
	fs.StringVar(&stateDirs, "state-dir", "/var/lib/rik,/var/lib/riklet", "directories whose free space to check (comma-separated)")
	if code, ok := parse(fs, args, stderr, 0); !ok {
		return code
	}
	var err error
	if o.Firewall, err = sdn.ParseFirewall(o.Firewall); err != nil {
		fmt.Fprintf(stderr, "rik doctor: --firewall: %v\n", err)
		return 2
	}
	for _, d := range strings.Split(stateDirs, ",") {
		if d = strings.TrimSpace(d); d != "" {
			o.StateDirs = append(o.StateDirs, d)
		}
	}
	o.FetchKernel = "test/kernel/fetch.sh"
	if _, err := os.Stat(installedFetchKernel); err == nil {
		o.FetchKernel = installedFetchKernel
	}
	rs := doctor.Run(doctor.Real(), o)
	fmt.Fprintln(stdout, "rik doctor: can this node run a riklet?")
	doctor.Write(stdout, rs)
	if doctor.Failed(rs) {
		return 1
	}
	return 0
}
