package rikctl

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/rik-org/rik/internal/atomicfile"
)

// Context is a named cluster and the user to talk to it as.
type Context struct {
	Name    string  `json:"name"`
	Cluster Cluster `json:"cluster"`
	User    User    `json:"user,omitzero"`
}

// defaultContextName names the context of a single-cluster file without a
// cluster name.
const defaultContextName = "default"

// contexts lists the file's contexts: its named ones, and the top-level
// cluster of a single-cluster file (named after the cluster, or
// "default") when it has one.
func (c Config) contexts() []Context {
	var out []Context
	if c.Cluster.Server != "" || len(c.Contexts) == 0 {
		name := c.Cluster.Name
		if name == "" {
			name = defaultContextName
		}
		out = append(out, Context{Name: name, Cluster: c.Cluster, User: c.User})
	}
	return append(out, c.Contexts...)
}

// current is the name of the file's current context.
func (c Config) current() string {
	if c.CurrentContext != "" {
		return c.CurrentContext
	}
	return c.contexts()[0].Name
}

// pick returns the context named (the current one for ""), and the field
// path of its cluster for errors.
func (c Config) pick(name string) (Context, string, error) {
	if name == "" {
		name = c.current()
	}
	all := c.contexts()
	for i, ctx := range all {
		if ctx.Name != name {
			continue
		}
		if len(all) > len(c.Contexts) { // the top-level cluster comes first
			if i == 0 {
				return ctx, "cluster", nil
			}
			i--
		}
		return ctx, fmt.Sprintf("contexts[%d].cluster", i), nil
	}
	return Context{}, "", fmt.Errorf("context %q not found (see rikctl config get-contexts)", name)
}

func newConfigCommand(a *app) *cobra.Command {
	cfg := &cobra.Command{
		Use:   "config",
		Short: "Show and switch the contexts (clusters) of the config file",
		Long: "The config file ($RIKCONFIG or ~/.rik/config.yaml) holds one cluster (RIK's format) or several\n" +
			"named contexts, each a cluster and a user, one of them current. --context picks another for one command.",
		Example: "  rikctl config get-contexts\n  rikctl config use-context prod\n  rikctl --context dev get nodes",
		Args:    resourceArgs("get-contexts, use-context or current-context"),
		RunE:    needResource,
	}
	path := func() string { return ConfigPath(a.env.Getenv) }
	cfg.AddCommand(&cobra.Command{
		Use:     "get-contexts",
		Short:   "List the contexts of the config file",
		Example: "  rikctl config get-contexts",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			file, _, err := readConfigFile(path())
			if err != nil {
				return err
			}
			current := file.current()
			rows := [][]string{}
			for _, c := range file.contexts() {
				mark := ""
				if c.Name == current {
					mark = "*"
				}
				server := c.Cluster.Server
				if server == "" {
					server = DefaultServer
				}
				rows = append(rows, []string{mark, c.Name, server})
			}
			return writeTable(a.env.Stdout, []string{"CURRENT", "NAME", "SERVER"}, rows)
		},
	}, &cobra.Command{
		Use:     "current-context",
		Short:   "Print the current context",
		Example: "  rikctl config current-context",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			file, _, err := readConfigFile(path())
			if err != nil {
				return err
			}
			fmt.Fprintln(a.env.Stdout, clean(file.current()))
			return nil
		},
	}, &cobra.Command{
		Use:               "use-context NAME",
		Short:             "Make NAME the current context of the config file",
		Example:           "  rikctl config use-context prod",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeContexts(a),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := useContext(path(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(a.env.Stdout, "switched to context %q\n", clean(args[0]))
			return nil
		},
	})
	return cfg
}

// useContext sets the file's current context to name, which it must
// hold. The file is rewritten (comments at its top kept) only if that
// changes it.
func useContext(path, name string) error {
	file, found, err := readConfigFile(path)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("no config file %s", path)
	}
	if _, _, err := file.pick(name); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if file.current() == name {
		return nil
	}
	file.CurrentContext = name
	b, err := yaml.Marshal(file)
	if err != nil {
		return fmt.Errorf("encoding config: %w", err)
	}
	old, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	return atomicfile.Write(path, append(leadingComments(old), b...), 0o600)
}

// leadingComments returns the comment lines at the top of a YAML file.
func leadingComments(b []byte) []byte {
	var out []byte
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if !strings.HasPrefix(line, "#") {
			break
		}
		out = append(out, line...)
	}
	return out
}

// completeContexts completes context names from the config file.
func completeContexts(a *app) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		file, _, err := readConfigFile(ConfigPath(a.env.Getenv))
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		var names []string
		for _, c := range file.contexts() {
			names = append(names, c.Name)
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}
