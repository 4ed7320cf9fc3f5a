package pod

// Root tests of the sandbox: seccomp, no new privileges, securityContext
// and the refusal of privileged containers, on real runc containers.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/testutil"
	"github.com/rik-org/rik/internal/workload"
)

// procStatus returns the fields of /proc/<pid>/status of the init of
// container name of pod id.
func procStatus(t *testing.T, r *Runtime, id, name string) map[string]string {
	t.Helper()
	st, err := r.ctrs.State(context.Background(), runcID(id, name))
	if err != nil {
		t.Fatalf("runc state %s: %v", name, err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", st.Pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		out[k] = strings.TrimSpace(v)
	}
	return out
}

// capMask is the CapEff mask of a set of capabilities.
func capMask(caps []string) string {
	var m uint64
	for i, c := range workload.AllCapabilities {
		for _, x := range caps {
			if x == c {
				m |= 1 << i
			}
		}
	}
	return fmt.Sprintf("%016x", m)
}

// waitLog waits until the logs of container name hold want, and returns
// them.
func waitLog(t *testing.T, r *Runtime, inst runtime.Instance, name, want string) string {
	t.Helper()
	var logs bytes.Buffer
	testutil.Eventually(t, 20*time.Second, func() bool {
		logs.Reset()
		_ = r.Logs(context.Background(), inst, runtime.LogOptions{Container: name}, &logs)
		return strings.Contains(logs.String(), want)
	}, func() string { return fmt.Sprintf("logs of %s %q lack %q", name, logs.String(), want) })
	return logs.String()
}

func TestRootSeccompAndSecurityContext(t *testing.T) {
	e := setup(t)
	r := e.runtime(t)
	ctx := context.Background()
	uid, gid := int64(1234), int64(4321)
	script := `echo "uid=$(id -u) gid=$(id -g)"; if touch /probe 2>/dev/null; then echo rootfs=rw; else echo rootfs=ro; fi; grep CapEff /proc/self/status; echo done; exec sleep 3600`
	inst := instance("sandbox",
		workload.Container{Name: "plain", Image: e.ref, Command: []string{"sh", "-c", script}},
		workload.Container{Name: "user", Image: e.ref, Command: []string{"sh", "-c", script},
			SecurityContext: &workload.SecurityContext{RunAsUser: &uid, RunAsGroup: &gid, ReadOnlyRootFilesystem: true}},
		workload.Container{Name: "caps", Image: e.ref, Command: []string{"sh", "-c", script},
			SecurityContext: &workload.SecurityContext{Capabilities: &workload.Capabilities{Drop: []string{"ALL"}, Add: []string{"net_bind_service", "CAP_KILL"}}}},
	)
	if _, err := r.Start(ctx, inst); err != nil {
		t.Fatal(err)
	}
	defer r.Stop(ctx, inst)

	for _, tt := range []struct {
		name, logs, capEff string
	}{
		{"plain", "uid=0 gid=0\nrootfs=rw\nCapEff:\t" + capMask(workload.DefaultCapabilities), capMask(workload.DefaultCapabilities)},
		{"user", "uid=1234 gid=4321\nrootfs=ro\nCapEff:\t0000000000000000\n", "0000000000000000"},
		{"caps", "uid=0 gid=0\nrootfs=rw\nCapEff:\t" + capMask([]string{"CAP_NET_BIND_SERVICE", "CAP_KILL"}), capMask([]string{"CAP_NET_BIND_SERVICE", "CAP_KILL"})},
	} {
		st := procStatus(t, r, inst.ID, tt.name)
		if st["Seccomp"] != "2" || st["NoNewPrivs"] != "1" {
			t.Errorf("%s: Seccomp %q NoNewPrivs %q, want 2 and 1", tt.name, st["Seccomp"], st["NoNewPrivs"])
		}
		if st["CapEff"] != tt.capEff {
			t.Errorf("%s: CapEff %s, want %s", tt.name, st["CapEff"], tt.capEff)
		}
		if logs := waitLog(t, r, inst, tt.name, "done\n"); !strings.Contains(logs, tt.logs) {
			t.Errorf("%s: logs lack %q:\n%s", tt.name, tt.logs, logs)
		}
	}
	if st := procStatus(t, r, inst.ID, "caps"); st["CapBnd"] != st["CapEff"] {
		t.Errorf("caps: bounding set %s, want %s", st["CapBnd"], st["CapEff"])
	}
}

func TestRootPrivilegedRefusedUnlessAllowed(t *testing.T) {
	e := setup(t)
	r := e.runtime(t)
	ctx := context.Background()
	priv := workload.Container{Name: "priv", Image: e.ref, Command: []string{"sleep", "3600"},
		SecurityContext: &workload.SecurityContext{Privileged: true}}
	admin := workload.Container{Name: "admin", Image: e.ref, Command: []string{"sleep", "3600"},
		SecurityContext: &workload.SecurityContext{Capabilities: &workload.Capabilities{Add: []string{"SYS_ADMIN"}}}}
	for _, tt := range []struct {
		c     workload.Container
		field string
	}{
		{priv, "spec.containers[1].securityContext.privileged"},
		{admin, "spec.containers[1].securityContext.capabilities.add[0]"},
	} {
		inst := instance("priv", workload.Container{Name: "ok", Image: e.ref, Command: []string{"sleep", "3600"}}, tt.c)
		st, err := r.Start(ctx, inst)
		if !errors.Is(err, ErrPrivilegeNotAllowed) || st.Phase != runtime.PhaseFailed || st.Reason != api.ReasonPrivilegedRefused ||
			!strings.Contains(st.Message, tt.field) || !strings.Contains(st.Message, "--allow-privileged") {
			t.Errorf("Start(%s) = %+v, %v; want FAILED PrivilegedNotAllowed naming %s", tt.c.Name, st, err, tt.field)
		}
		e.assertGone(t, r, inst.ID)
	}

	// A node that allows it runs it: every capability, no seccomp filter.
	e.cfg.AllowPrivileged = true
	r2 := e.runtime(t)
	inst := instance("priv", priv)
	if _, err := r2.Start(ctx, inst); err != nil {
		t.Fatal(err)
	}
	defer r2.Stop(ctx, inst)
	// Every capability the riklet itself holds (some sandboxes lack a few).
	st := procStatus(t, r2, inst.ID, "priv")
	if want := capMask(r2.hostCaps); st["Seccomp"] != "0" || st["CapEff"] != want || len(r2.hostCaps) < len(workload.DefaultCapabilities) {
		t.Errorf("privileged: Seccomp %q CapEff %q, want 0 and %s", st["Seccomp"], st["CapEff"], want)
	}
}
