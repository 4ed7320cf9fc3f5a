package rikctl

import (
	"context"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/version"
)

// finishCommands gives the command tree what every command shares:
// --version, --context, the config and completion commands, the
// completion of resource names (asked of the controller), and the
// examples of the commands defined without one.
func finishCommands(root *cobra.Command, a *app) {
	root.Version = version.Version
	root.SetVersionTemplate(version.String("rikctl") + "\n")
	root.PersistentFlags().StringVar(&a.ctx, "context", "", "context of the config file to use (default: its current-context)")
	_ = root.RegisterFlagCompletionFunc("context", completeContexts(a))
	root.AddCommand(newConfigCommand(a))
	root.SetOut(a.env.Stdout) // the completion command keeps the writer it is made with
	root.SetErr(a.env.Stderr)
	root.InitDefaultCompletionCmd()
	walk(root, func(c *cobra.Command) {
		path := strings.TrimPrefix(c.CommandPath(), "rikctl ")
		if complete, ok := nameCompletions[path]; ok && c.ValidArgsFunction == nil {
			c.ValidArgsFunction = completeNames(a, complete)
		}
		for _, flag := range []string{"workload", "workload-id"} { // they name a workload
			if c.LocalNonPersistentFlags().Lookup(flag) != nil {
				_ = c.RegisterFlagCompletionFunc(flag, listNames(a, workloadNames, nil))
			}
		}
		if c.Example == "" {
			c.Example = examples[path]
		}
	})
}

// walk calls fn on c and every command under it.
func walk(c *cobra.Command, fn func(*cobra.Command)) {
	fn(c)
	for _, sub := range c.Commands() {
		walk(sub, fn)
	}
}

// lister lists the names of one kind of resource.
type lister func(ctx context.Context, c *Client) ([]string, error)

func workloadNames(ctx context.Context, c *Client) ([]string, error) {
	items, err := c.ListWorkloads(ctx)
	return namesOf(items, func(it WorkloadItem) string { return it.Name }), err
}

func instanceNames(ctx context.Context, c *Client) ([]string, error) {
	items, err := c.ListInstances(ctx)
	return namesOf(items, func(it InstanceItem) string { return it.Name }), err
}

func nodeNames(ctx context.Context, c *Client) ([]string, error) {
	items, err := c.ListNodes(ctx)
	return namesOf(items, func(it api.Item[api.Node]) string { return it.Name }), err
}

// namesOf is the name of each item.
func namesOf[T any](items []T, name func(T) string) []string {
	names := make([]string, 0, len(items))
	for _, it := range items {
		names = append(names, name(it))
	}
	return names
}

// nameCompletions are the commands whose arguments are resource names,
// by path, with how to list them.
var nameCompletions = map[string]lister{
	"get workloads":   workloadNames,
	"get instances":   instanceNames,
	"get nodes":       nodeNames,
	"delete workload": workloadNames,
	"delete instance": instanceNames,
	"logs":            instanceNames,
}

// completionTimeout bounds the controller's answer to a completion: a
// shell waits for it.
const completionTimeout = 5 * time.Second

// completeNames completes resource names listed by list, those not given
// yet, with the connection the flags and the config file set up.
func completeNames(a *app, list lister) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if cmd.Args != nil && cmd.Args(cmd, append(args, "x")) != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp // no more arguments taken
		}
		return listNames(a, list, args)(cmd, args, toComplete)
	}
}

// listNames completes the names list gives that start with toComplete,
// but those in given.
func listNames(a *app, list lister, given []string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		c, err := a.client()
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
		defer cancel()
		names, err := list(ctx, c)
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		var out []string
		for _, n := range names {
			if strings.HasPrefix(n, toComplete) && !slices.Contains(given, n) {
				out = append(out, clean(n))
			}
		}
		sort.Strings(out)
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// examples of the commands defined without one, by path.
var examples = map[string]string{
	"rikctl": "  rikctl create workload -f examples/pod-httpd.yaml\n" +
		"  rikctl create instance --workload-id httpd --replicas 2\n" +
		"  rikctl get instances -o wide\n" +
		"  rikctl --context prod get nodes",
	"create":          "  rikctl create workload -f web.yaml\n  rikctl create instance --workload-id web",
	"create workload": "  rikctl create workload -f examples/pod-httpd.yaml\n  cat web.json | rikctl create workload -f -",
	"create instance": "  rikctl create instance --workload-id web\n" +
		"  rikctl create instance --workload-id web --replicas 3\n" +
		"  rikctl create instance --workload-id web --name web-blue",
	"get": "  rikctl get workloads\n  rikctl get instances -o wide\n  rikctl get nodes -o json",
	"get workloads": "  rikctl get workloads\n  rikctl get workload web -o yaml\n" +
		"  rikctl get workloads -o name\n  rikctl get workloads -o jsonpath='{range .[*]}{.name}{\"\\n\"}{end}'",
	"get instances": "  rikctl get instances\n  rikctl get instances --workload web -o wide\n" +
		"  rikctl get instance web-x7k2p -o json\n" +
		"  rikctl get instances -o go-template='{{range .}}{{.name}} {{.value.status}}{{\"\\n\"}}{{end}}'",
	"get nodes": "  rikctl get nodes\n  rikctl get node node-1 -o wide\n" +
		"  rikctl get nodes -o jsonpath='{.[*].name}'",
	"delete":                "  rikctl delete workload web\n  rikctl delete instance web-x7k2p",
	"delete workload":       "  rikctl delete workload web\n  rikctl delete workload web api",
	"delete instance":       "  rikctl delete instance web-x7k2p\n  rikctl delete instances web-x7k2p web-q2m9d",
	"logs":                  "  rikctl logs web-x7k2p\n  rikctl logs web-x7k2p -c sidecar --tail 20 -f",
	"token":                 "  rikctl token create --role viewer --description ci\n  rikctl token list\n  rikctl token delete ID",
	"token create":          "  rikctl token create --role operator --ttl 720h --description deploy",
	"token list":            "  rikctl token list",
	"token delete":          "  rikctl token delete 6f1c2a",
	"completion":            "  source <(rikctl completion bash)\n  rikctl completion zsh > \"${fpath[1]}/_rikctl\"\n  rikctl completion fish | source",
	"completion bash":       "  source <(rikctl completion bash)\n  rikctl completion bash > /etc/bash_completion.d/rikctl",
	"completion zsh":        "  rikctl completion zsh > \"${fpath[1]}/_rikctl\"",
	"completion fish":       "  rikctl completion fish > ~/.config/fish/completions/rikctl.fish",
	"completion powershell": "  rikctl completion powershell | Out-String | Invoke-Expression",
}
