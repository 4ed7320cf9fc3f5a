package packaging

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/rik-org/rik/internal/testutil"
)

// settingRe finds the settings of a configuration file, set or given as
// an example in a comment ("# tls-san: ...").
var settingRe = regexp.MustCompile(`(?m)^(?:# ?)?([a-z][a-z0-9-]*:.*)$`)

// Every setting of /etc/rik/<component>.yaml, set or given as an example
// in a comment, is a flag of the component that takes the value written:
// `<binary> --key=value -h` parses it, then prints the help and starts
// nothing. Flags hidden from the help (RIK's old names) count too.
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
		lines := settingRe.FindAllStringSubmatch(string(b), -1)
		if len(lines) < len(set) {
			t.Errorf("%s: found %d settings, fewer than the %d set", file, len(lines), len(set))
		}
		for _, l := range lines {
			key, value, err := setting(l[1])
			if err != nil {
				t.Errorf("%s: %q: %v", file, l[1], err)
				continue
			}
			cmd := exec.Command(filepath.Join(bins, binary), "--"+key+"="+value, "-h")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s: %s --%s=%s -h: %v\n%s", file, binary, key, value, err, firstLine(out))
			}
		}
	}
}

// setting reads one "key: value" line as YAML: the key and the value as
// it would be given on the command line.
func setting(line string) (key, value string, err error) {
	var m map[string]any
	if err := yaml.Unmarshal([]byte(line), &m); err != nil || len(m) != 1 {
		return "", "", fmt.Errorf("not one YAML setting: %v", err)
	}
	for k, v := range m {
		switch v.(type) {
		case string, bool, float64:
			return k, fmt.Sprint(v), nil
		}
		return "", "", fmt.Errorf("%s: a scalar is expected, not %T", k, v)
	}
	return "", "", nil
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s
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
