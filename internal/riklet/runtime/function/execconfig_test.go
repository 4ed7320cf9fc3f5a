package function

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/workload"
)

func TestExecConfigOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		exec workload.Execution
		want execConfig
		ok   bool
	}{
		{"nothing", workload.Execution{Entrypoint: "/sbin/init"}, execConfig{}, false},
		{"no entrypoint", workload.Execution{}, execConfig{}, false},
		{"entrypoint words", workload.Execution{Entrypoint: "/bin/httpd  -f -p 80"}, execConfig{Args: []string{"-f", "-p", "80"}}, true},
		{"words then args", workload.Execution{Entrypoint: "/bin/sh -c", Args: []string{"echo a,b c", ""}},
			execConfig{Args: []string{"-c", "echo a,b c", ""}}, true},
		{"env only", workload.Execution{Env: []workload.EnvVar{{Name: "A", Value: "1 2"}}},
			execConfig{Env: []workload.EnvVar{{Name: "A", Value: "1 2"}}}, true},
	} {
		got, ok := execConfigOf(workload.Function{Execution: tc.exec})
		if ok != tc.ok || !slices.Equal(got.Args, tc.want.Args) || !slices.Equal(got.Env, tc.want.Env) {
			t.Errorf("%s: execConfigOf = %+v, %v; want %+v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestInitrdFor(t *testing.T) {
	dir := t.TempDir()
	shared := filepath.Join(dir, "shared.cpio.gz")
	base := []byte("0123456789") // 10 bytes: 2 bytes of padding follow
	if err := os.WriteFile(shared, base, 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err := initrdFor(shared, dir, 0, workload.Function{}); err != nil || p != shared {
		t.Errorf("nothing to pass: %q, %v; want the shared initramfs", p, err)
	}
	fn := workload.Function{Execution: workload.Execution{Entrypoint: "/bin/app -v", Args: []string{"x y"},
		Env: []workload.EnvVar{{Name: "TOKEN", Value: "s3cret"}}}}
	p, err := initrdFor(shared, dir, 0, fn)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o400 {
		t.Errorf("mode %v, want 0400", fi.Mode().Perm())
	}
	if !bytes.HasPrefix(b, base) || !bytes.Equal(b[10:12], []byte{0, 0}) || string(b[12:18]) != "070701" {
		t.Fatalf("initrd does not hold the shared one, padding, then a cpio archive: %q", b[:min(len(b), 40)])
	}
	i := bytes.Index(b, []byte(execConfigPath+"\x00"))
	j := bytes.IndexByte(b[i:], '{')
	k := bytes.IndexByte(b[i+j:], 0)
	if i < 0 || j < 0 || k < 0 {
		t.Fatalf("no %s in %q", execConfigPath, b[12:])
	}
	var got execConfig
	if err := json.Unmarshal(b[i+j:i+j+k], &got); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Args, []string{"-v", "x y"}) || len(got.Env) != 1 || got.Env[0].Value != "s3cret" {
		t.Errorf("exec config = %+v", got)
	}
	if !bytes.Contains(b, []byte("TRAILER!!!")) {
		t.Error("cpio archive not closed")
	}
	if _, err := initrdFor(filepath.Join(dir, "missing"), dir, 0, fn); err == nil {
		t.Error("missing shared initramfs: no error")
	}
}

// TestVMArgsAndEnv boots a real microVM whose entrypoint gets arguments
// (from the entrypoint's words and execution.args) and an environment,
// which appear in the guest and nowhere in the riklet's logs, state file
// or the VMM's command line.
func TestVMArgsAndEnv(t *testing.T) {
	e := newVMEnv(t)
	ctx := context.Background()
	logs := &syncBuffer{}
	r, err := New(ctx, e.config(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))), (&recorder{}).report)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer r.Close()
	inst := fnInstance("dddddddd-0000-4000-8000-000000000004", e.rootfsURL, "/bin/sh -c")
	const secret = "s3cret-value-42"
	inst.Workload.Spec.Function.Execution.Args = []string{
		`echo "guest args: $0|$1"; echo "guest env: $GREETING|${#TOKEN}|$PATH"; exec /bin/httpd -f -p 80 -h /www`,
		"a b,c", "second 'quoted'",
	}
	inst.Workload.Spec.Function.Execution.Env = []workload.EnvVar{
		{Name: "GREETING", Value: "hello, world"}, {Name: "TOKEN", Value: secret}, {Name: "PATH", Value: "/bin"},
	}
	st, err := r.Start(ctx, inst)
	if err != nil {
		t.Fatalf("Start: %v\n%s", err, logs)
	}
	defer r.Stop(ctx, inst)
	if got := e.get(t, "http://"+st.IP+"/", 60*time.Second); got != e.page {
		t.Fatalf("GET guest = %q", got)
	}
	var out bytes.Buffer
	if err := r.Logs(ctx, inst, runtime.LogOptions{}, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"guest args: a b,c|second 'quoted'", "guest env: hello, world|" + "15|/bin"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("console lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(logs.String(), secret) {
		t.Error("an env value is in the runtime's logs")
	}
	dir := filepath.Join(e.state, "functions", inst.ID)
	state, err := os.ReadFile(filepath.Join(dir, "vm.json"))
	if err != nil || bytes.Contains(state, []byte(secret)) {
		t.Errorf("vm.json holds an env value (or cannot be read: %v)", err)
	}
	s, err := readState(dir)
	if err != nil {
		t.Fatal(err)
	}
	cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(s.Process.Pid), "cmdline"))
	if err != nil || bytes.Contains(cmdline, []byte(secret)) || bytes.Contains(cmdline, []byte("hello, world")) {
		t.Errorf("the VMM's command line holds an env value (or cannot be read: %v)", err)
	}
}
