package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/rik-org/rik/internal/testutil"
)

// keyRe finds the keys of a configuration file, set or commented out
// ("# node-timeout: 15s").
var keyRe = regexp.MustCompile(`(?m)^#? ?([a-z][a-z0-9-]*):`)

// Every key of /etc/rik/<component>.yaml, set or given for reference in a
// comment, is a flag of the component: the files are valid YAML and say
// nothing the binaries would not understand.
func TestConfigKeysAreFlags(t *testing.T) {
	bins := binDir(t)
	for file, binary := range map[string]string{
		"controller.yaml": "controller", "scheduler.yaml": "scheduler", "riklet.yaml": "riklet",
	} {
		b, err := os.ReadFile(filepath.Join(repo(t), "packaging", "etc", file))
		if err != nil {
			t.Fatal(err)
		}
		var set map[string]any
		if err := yaml.Unmarshal(b, &set); err != nil || len(set) == 0 {
			t.Errorf("%s: %v (%d keys)", file, err, len(set))
		}
		// -h prints the flags and starts nothing.
		help, _ := exec.Command(filepath.Join(bins, binary), "-h").CombinedOutput()
		keys := keyRe.FindAllStringSubmatch(string(b), -1)
		if len(keys) < len(set) {
			t.Errorf("%s: found %d keys, fewer than the %d set", file, len(keys), len(set))
		}
		for _, k := range keys {
			// "  -name" (flag), "      --name" or "  -n, --name" (cobra).
			if !regexp.MustCompile(`(?m)^\s+(-\w, )?--?` + regexp.QuoteMeta(k[1]) + `\b`).Match(help) {
				t.Errorf("%s: %q is not a flag of %s", file, k[1], binary)
			}
		}
	}
}

// The compose file of the control plane is valid for docker-compose
// (building its image needs a Docker daemon, which CI has not).
func TestComposeConfig(t *testing.T) {
	testutil.RequireTool(t, "docker-compose")
	root := repo(t)
	command(t, root, "docker-compose", "-f", "docker-compose.yml", "config", "-q")
	services := strings.Fields(command(t, root, "docker-compose", "-f", "docker-compose.yml", "config", "--services"))
	for _, want := range []string{"etcd", "pki", "scheduler", "controller"} {
		found := false
		for _, s := range services {
			found = found || s == want
		}
		if !found {
			t.Errorf("no service %s in %v", want, services)
		}
	}
	// The image it builds copies binaries make release puts there.
	docker, err := os.ReadFile(filepath.Join(root, "packaging", "docker", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"controller", "scheduler", "rik", "rikctl"} {
		if !strings.Contains(string(docker), "dist/linux-${TARGETARCH}/"+b+" ") {
			t.Errorf("Dockerfile does not copy dist/linux-${TARGETARCH}/%s", b)
		}
	}
}
