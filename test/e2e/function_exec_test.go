package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/workload"
)

// TestFunctionArgsAndEnv is issue 10's Function arguments and environment
// with the real binaries under QEMU: the entrypoint's own words,
// execution.args (spaces and commas kept) and execution.env reach the
// guest's entrypoint, which serves them; no env value shows in the
// components' logs. Its readiness probe reaches the guest at its address.
func TestFunctionArgsAndEnv(t *testing.T) {
	c, n := functionCluster(t)
	const (
		hostPort = 8082
		secret   = "s3cret-e2e-value"
	)
	script := `echo "args: $0|$1" > /www/args.html; echo "env: $GREETING|${#TOKEN}" >> /www/args.html; exec /bin/httpd -f -p 80 -h /www`
	def := c.writeFile("fn-exec.json", fmt.Sprintf(`{
  "apiVersion": "v1", "kind": "Function", "name": "fnexec", "restartPolicy": "Always",
  "spec": {"function": {
    "execution": {"rootfs": %q, "vcpus": 1, "memory": 128,
      "entrypoint": "/bin/sh -c", "args": [%q, "a b,c", "second 'arg'"],
      "env": [{"name": "GREETING", "value": "hello, world"}, {"name": "TOKEN", "value": %q}]},
    "exposure": [{"port": %d, "targetPort": 80}],
    "healthcheck": {"readiness": {"http": {"path": "/args.html", "port": 80}, "intervalSeconds": 1}}
  }}
}`, c.rootfsURL, script, secret, hostPort))
	c.mustRikctl("create", "workload", "-f", def)
	c.mustRikctl("create", "instance", "--workload-id", "fnexec", "--name", "fnexec-0")
	c.waitStatus("fnexec-0", workload.StatusRunning, 3*time.Minute)

	want := "args: a b,c|second 'arg'\nenv: hello, world|" + fmt.Sprint(len(secret)) + "\n"
	c.waitPage(c.client, fmt.Sprintf("http://%s:%d/args.html", n.ip, hostPort), want, 3*time.Minute)
	c.eventually(30*time.Second, "fnexec-0 ready", func() error {
		it, _, err := c.instance("fnexec-0")
		if err != nil || !it.Value.Ready {
			return fmt.Errorf("fnexec-0 %s ready=%v: %v", it.Value.Status, it.Value.Ready, err)
		}
		return nil
	})
	for _, p := range c.procs {
		if b, _ := os.ReadFile(p.log); strings.Contains(string(b), secret) {
			t.Errorf("the log of %s holds an env value", p.name)
		}
	}
	c.mustRikctl("delete", "instance", "fnexec-0")
	c.waitGone("fnexec-0", 2*time.Minute)
}
