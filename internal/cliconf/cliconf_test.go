package cliconf

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// settings is what the test command reads.
type settings struct {
	Listen string
	Port   int
	Debug  bool
	Labels []string
}

// runCommand runs a command with a few flags of each kind and returns what
// its flags held when it ran.
func runCommand(t *testing.T, args []string, env map[string]string) (settings, error) {
	t.Helper()
	var s settings
	cmd := &cobra.Command{
		Use:  "comp",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return nil },
	}
	cmd.Flags().StringVar(&s.Listen, "listen", "default:1", "")
	cmd.Flags().IntVar(&s.Port, "port", 7, "")
	cmd.Flags().BoolVar(&s.Debug, "debug", false, "")
	cmd.Flags().StringArrayVar(&s.Labels, "label", nil, "")
	Setup(cmd, Options{
		Component:   "nonexistent-test-component",
		EnvAliases:  map[string][]string{"listen": {"OLD_LISTEN"}},
		FlagAliases: map[string]string{"listenip": "listen"},
		Getenv:      func(k string) string { return env[k] },
	})
	cmd.SetArgs(args)
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	return s, cmd.Execute()
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrecedence(t *testing.T) {
	file := writeConfig(t, "listen: file:3\nport: 9\ndebug: true\nlabel: [a=1, b=2]\n")
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want settings
	}{
		{"defaults", nil, nil, settings{Listen: "default:1", Port: 7}},
		{"file", []string{"--config", file}, nil, settings{Listen: "file:3", Port: 9, Debug: true, Labels: []string{"a=1", "b=2"}}},
		{"file from RIK_CONFIG", nil, map[string]string{"RIK_CONFIG": file}, settings{Listen: "file:3", Port: 9, Debug: true, Labels: []string{"a=1", "b=2"}}},
		{"env over file", []string{"--config", file}, map[string]string{"RIK_LISTEN": "env:2", "RIK_DEBUG": "false"},
			settings{Listen: "env:2", Port: 9, Labels: []string{"a=1", "b=2"}}},
		{"old env name", nil, map[string]string{"OLD_LISTEN": "old:4"}, settings{Listen: "old:4", Port: 7}},
		{"new env name over old", nil, map[string]string{"OLD_LISTEN": "old:4", "RIK_LISTEN": "env:2"}, settings{Listen: "env:2", Port: 7}},
		{"flag over env and file", []string{"--config", file, "--listen", "flag:5", "--label", "c=3"},
			map[string]string{"RIK_LISTEN": "env:2", "RIK_PORT": "8"},
			settings{Listen: "flag:5", Port: 8, Debug: true, Labels: []string{"c=3"}}},
		{"old flag name", []string{"--listenip", "flag:6"}, nil, settings{Listen: "flag:6", Port: 7}},
		{"RIK_VERSION and RIK_HELP are no settings", nil, map[string]string{"RIK_VERSION": "v9", "RIK_HELP": "x"}, settings{Listen: "default:1", Port: 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := runCommand(t, tc.args, tc.env)
			if err != nil {
				t.Fatal(err)
			}
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(tc.want)
			if string(g) != string(w) {
				t.Errorf("got %s, want %s", g, w)
			}
		})
	}
}

func TestOldNameInFile(t *testing.T) {
	got, err := runCommand(t, []string{"--config", writeConfig(t, "listenip: file:7\n")}, nil)
	if err != nil || got.Listen != "file:7" {
		t.Errorf("got %+v, %v", got, err)
	}
}

func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"missing --config file", []string{"--config", "/nonexistent/rik.yaml"}, nil, "reading config"},
		{"unknown setting", []string{"--config", writeConfig(t, "listen: x\nlisten-addr: y\n")}, nil, "listen-addr: unknown setting"},
		{"config in the file", []string{"--config", writeConfig(t, "config: /x\n")}, nil, "config: unknown setting"},
		{"version in the file", []string{"--config", writeConfig(t, "version: true\n")}, nil, "version: unknown setting"},
		{"not YAML", []string{"--config", writeConfig(t, "listen: [\n")}, nil, "config "},
		{"bad value in file", []string{"--config", writeConfig(t, "port: many\n")}, nil, "port: "},
		{"nested value", []string{"--config", writeConfig(t, "label: [[a]]\n")}, nil, "label: [0]: want a string"},
		{"bad env value", nil, map[string]string{"RIK_PORT": "many"}, `RIK_PORT="many"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runCommand(t, tc.args, tc.env)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestHelpAndVersionRunNothing(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"--version"}} {
		ran := false
		cmd := &cobra.Command{Use: "comp", RunE: func(*cobra.Command, []string) error { ran = true; return nil }}
		Setup(cmd, Options{Component: "comp"})
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetArgs(args)
		if err := cmd.Execute(); err != nil || ran || out.Len() == 0 {
			t.Errorf("%v: err %v, ran %v, output %q", args, err, ran, out.String())
		}
	}
}

func TestLogging(t *testing.T) {
	var buf bytes.Buffer
	log, err := Logging{Level: "debug", Format: "json"}.Logger(&buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hello", "k", 1)
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil || line["msg"] != "hello" || line["level"] != "DEBUG" {
		t.Errorf("json line %q: %v", buf.String(), err)
	}
	for _, bad := range []Logging{{Level: "loud"}, {Level: "info", Format: "xml"}} {
		if _, err := bad.Logger(&buf); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
