// Package rikctl is rik's command-line client: commands (cobra), a REST
// client of the controller, and the output formats.
package rikctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/workload"
)

// Env is what rikctl takes from its process; tests provide their own.
type Env struct {
	Stdin      io.Reader
	Stdout     io.Writer
	Stderr     io.Writer
	Getenv     func(string) string
	Now        func() time.Time
	HTTPClient *http.Client // nil: http.DefaultClient
}

// Main runs rikctl with the process's environment and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return Run(ctx, args, Env{Stdin: os.Stdin, Stdout: stdout, Stderr: stderr, Getenv: os.Getenv, Now: time.Now})
}

// Run runs one rikctl command line and returns the exit code: 0 on
// success, 1 on any error (printed as "error: ..." on env.Stderr).
func Run(ctx context.Context, args []string, env Env) int {
	if env.Stdin == nil {
		env.Stdin = strings.NewReader("")
	}
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	if env.Now == nil {
		env.Now = time.Now
	}
	root := newRootCommand(&app{env: env})
	root.SetArgs(args)
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(env.Stderr, "error: "+cleanMultiline(err.Error()))
		return 1
	}
	return 0
}

// cleanMultiline keeps newlines but removes other control characters.
func cleanMultiline(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = clean(l)
	}
	return strings.Join(lines, "\n")
}

// app holds the state shared by the commands of one run.
type app struct {
	env    Env
	server string // --server
	token  string // --token
	ca     string // --certificate-authority
	ctx    string // --context
}

// client talks to the controller the flags, the environment and the
// config file name, in this order of precedence.
func (a *app) client() (*Client, error) {
	cfg, err := LoadContext(ConfigPath(a.env.Getenv), a.ctx)
	if err != nil {
		return nil, err
	}
	token := firstNonEmpty(a.token, a.env.Getenv("RIK_TOKEN"))
	if a.server != "" {
		if err := checkServer(a.server); err != nil {
			return nil, fmt.Errorf("--server: %w", err)
		}
		if normalizeServer(a.server) != normalizeServer(cfg.Cluster.Server) {
			cfg.User.Token = "" // the file's token goes only to the file's server
		}
		cfg.Cluster.Server = a.server
	}
	token = firstNonEmpty(token, cfg.User.Token)
	if strings.ContainsAny(token, " \t\r\n") {
		return nil, errors.New("token: must not contain spaces or newlines")
	}
	hc := a.env.HTTPClient
	if ca := firstNonEmpty(a.ca, cfg.Cluster.CertificateAuthority); ca != "" {
		pem, err := LoadCA(ca)
		if err != nil {
			return nil, err
		}
		if hc, err = tlsClient(hc, pem); err != nil {
			return nil, err
		}
	}
	return NewClient(cfg.Cluster.Server, hc).WithToken(token), nil
}

func newRootCommand(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "rikctl",
		Short: "rikctl talks to a rik cluster",
		Long: "rikctl manages workloads, instances and nodes of a rik cluster through its controller.\n" +
			"The controller, its CA and the token are read from $RIKCONFIG or ~/.rik/config.yaml\n" +
			"(default server " + DefaultServer + "); $RIK_TOKEN and the flags override them.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&a.server, "server", "", "controller URL (overrides the config file), e.g. "+DefaultServer)
	root.PersistentFlags().StringVar(&a.token, "token", "", "bearer token (overrides $RIK_TOKEN and the config file's user.token, which is sent only to the config file's server)")
	root.PersistentFlags().StringVar(&a.ca, "certificate-authority", "", "CA certificate file the controller's certificate is checked against (overrides cluster.certificate-authority)")
	root.AddCommand(newCreateCommand(a), newGetCommand(a), newDeleteCommand(a), newLogsCommand(a), newTokenCommand(a), newVersionCommand(a),
		newDescribeCommand(a), newApplyCommand(a), newScaleCommand(a), newRolloutCommand(a))
	finishCommands(root, a)
	return root
}

func newCreateCommand(a *app) *cobra.Command {
	create := &cobra.Command{Use: "create", Short: "Create a workload or instances", Args: resourceArgs("workload or instance"), RunE: needResource}
	create.AddCommand(newCreateWorkloadCommand(a), newCreateInstanceCommand(a))
	return create
}

func newCreateWorkloadCommand(a *app) *cobra.Command {
	var file string
	wl := &cobra.Command{
		Use:     "workload -f FILE",
		Aliases: []string{"workloads"},
		Short:   "Create a workload from a JSON or YAML definition (-f - reads stdin)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			data, err := readDefinition(a.env.Stdin, file)
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			item, err := c.CreateWorkload(cmd.Context(), data)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.env.Stdout, "workload/%s created (id %s)\n", clean(item.Name), clean(item.ID))
			return nil
		},
	}
	wl.Flags().StringVarP(&file, "file", "f", "", "definition file (JSON or YAML), - for stdin")
	_ = wl.MarkFlagRequired("file")
	return wl
}

func newCreateInstanceCommand(a *app) *cobra.Command {
	var workloadID, name string
	var replicas int
	var wait bool
	var timeout time.Duration
	inst := &cobra.Command{
		Use:     "instance --workload-id ID [--replicas N] [--name NAME]",
		Aliases: []string{"instances"},
		Short:   "Create instances of a workload",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := instancesRequest(workloadID, name, replicas)
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			items, err := c.CreateInstances(cmd.Context(), req)
			if err != nil {
				return err
			}
			names := make([]string, 0, len(items))
			for _, it := range items {
				fmt.Fprintf(a.env.Stdout, "instance/%s created (id %s)\n", clean(it.Name), clean(it.ID))
				names = append(names, it.Name)
			}
			if wait {
				return waitRunning(cmd.Context(), c, names, timeout)
			}
			return nil
		},
	}
	waitFlags(inst, &wait, &timeout, "every instance is RUNNING")
	inst.Flags().StringVar(&workloadID, "workload-id", "", "workload id or name")
	inst.Flags().IntVar(&replicas, "replicas", 1, "number of instances")
	inst.Flags().StringVar(&name, "name", "", "instance name (default: <workload>-<random>)")
	_ = inst.MarkFlagRequired("workload-id")
	return inst
}

// instancesRequest checks the flags of create instance and makes its
// request.
func instancesRequest(workloadID, name string, replicas int) (api.CreateInstancesRequest, error) {
	req := api.CreateInstancesRequest{WorkloadID: workloadID, Replicas: &replicas}
	if replicas < 1 || replicas > workload.MaxReplicas {
		return req, fmt.Errorf("--replicas: must be between 1 and %d", workload.MaxReplicas)
	}
	if name != "" {
		if replicas > 1 {
			return req, errors.New("--name: cannot be used with --replicas > 1")
		}
		if err := workload.ValidName(name); err != nil {
			return req, fmt.Errorf("--%w", err)
		}
		req.Name = &name
	}
	return req, nil
}

// resourceArgs rejects an unknown resource type given to a verb.
func resourceArgs(want string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("unknown resource type %q for %q: want %s", args[0], cmd.CommandPath(), want)
		}
		return nil
	}
}

// needResource is the verb alone: say what is missing.
func needResource(cmd *cobra.Command, _ []string) error {
	return fmt.Errorf("%q needs a resource type; see %q", cmd.CommandPath(), cmd.CommandPath()+" --help")
}

// readDefinition reads a workload definition file (or stdin for "-"),
// converts YAML to JSON and validates it locally.
func readDefinition(stdin io.Reader, file string) ([]byte, error) {
	data, name, err := readSource(stdin, file, "definition", workload.MaxDefinitionBytes)
	if err != nil {
		return nil, err
	}
	return checkDefinition(name, data)
}

// readSource reads file (stdin for "-"), what it holds, at most limit
// bytes; name is what messages call it.
func readSource(stdin io.Reader, file, what string, limit int) (data []byte, name string, err error) {
	r, name := stdin, "stdin"
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, file, fmt.Errorf("reading %s: %w", what, err)
		}
		defer f.Close()
		r, name = f, file
	}
	data, err = io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, name, fmt.Errorf("reading %s %s: %w", what, name, err)
	}
	if len(data) > limit {
		return nil, name, fmt.Errorf("%s %s: larger than %d bytes", what, name, limit)
	}
	return data, name, nil
}

// checkDefinition converts a definition read from file (JSON or YAML) to
// JSON and validates it locally, listing every problem with its field.
func checkDefinition(file string, data []byte) ([]byte, error) {
	var err error
	if !json.Valid(data) { // not JSON: YAML (a superset of JSON)
		if data, err = yaml.YAMLToJSON(data); err != nil {
			return nil, fmt.Errorf("definition %s: not JSON or YAML: %w", file, err)
		}
	}
	if _, err := workload.Parse(data); err != nil {
		var ve *workload.ValidationError
		if errors.As(err, &ve) {
			var b strings.Builder
			fmt.Fprintf(&b, "invalid workload in %s:", file)
			for _, fe := range ve.Errors {
				b.WriteString("\n  " + fe.String())
			}
			return nil, errors.New(b.String())
		}
		return nil, fmt.Errorf("invalid workload in %s: %w", file, err)
	}
	return data, nil
}

func newGetCommand(a *app) *cobra.Command {
	var format string
	get := &cobra.Command{
		Use:   "get",
		Short: "Show workloads, instances or nodes",
		Args:  resourceArgs("workloads, instances or nodes"),
		RunE:  needResource,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			return checkFormat(format)
		},
	}
	get.PersistentFlags().StringVarP(&format, "output", "o", FormatTable, "output format: table, wide, json, yaml, name, jsonpath=TEMPLATE or go-template=TEMPLATE")
	get.AddCommand(newGetWorkloadsCommand(a, &format), newGetInstancesCommand(a, &format), newGetNodesCommand(a, &format))
	return get
}

func newGetWorkloadsCommand(a *app, format *string) *cobra.Command {
	var watch bool
	cmd := &cobra.Command{
		Use:     "workloads [NAME|ID]",
		Aliases: []string{"workload", "wl"},
		Short:   "List workloads, or show one",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if watch && len(args) == 0 {
				return watchWorkloads(cmd.Context(), a, c, *format)
			}
			items, err := c.ListWorkloads(cmd.Context())
			if err != nil {
				return err
			}
			return showOneOrList(a.env, *format, "workload", args, items,
				func(it WorkloadItem) (string, string) { return it.ID, it.Name },
				func(items []WorkloadItem) error {
					states, err := workloadStates(cmd.Context(), c)
					if err != nil {
						return err
					}
					return workloadTable(a.env.Stdout, *format, items, states)
				})
		},
	}
	addWatchFlag(cmd, &watch)
	return cmd
}

func newGetInstancesCommand(a *app, format *string) *cobra.Command {
	var ofWorkload string
	var watch bool
	inst := &cobra.Command{
		Use:     "instances [NAME|ID]",
		Aliases: []string{"instance", "inst"},
		Short:   "List instances (all, or of --workload), or show one",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if len(args) == 1 {
				return showInstance(cmd.Context(), a, c, *format, args[0])
			}
			if watch {
				return watchInstances(cmd.Context(), a, c, *format, ofWorkload)
			}
			var items []InstanceItem
			if ofWorkload != "" {
				items, err = c.WorkloadInstances(cmd.Context(), ofWorkload)
			} else {
				items, err = c.ListInstances(cmd.Context())
			}
			if err != nil {
				return err
			}
			slices.SortFunc(items, func(x, y InstanceItem) int { return strings.Compare(x.Name, y.Name) })
			if isData(*format) {
				return writeOutput(a.env.Stdout, *format, "instance", nonNil(items))
			}
			if len(items) == 0 {
				return noResources(a.env.Stderr)
			}
			return instanceTable(a.env.Stdout, *format, a.env.Now(), items)
		},
	}
	inst.Flags().StringVar(&ofWorkload, "workload", "", "only the instances of this workload (id or name)")
	addWatchFlag(inst, &watch)
	return inst
}

// showInstance prints the instance ref names.
func showInstance(ctx context.Context, a *app, c *Client, format, ref string) error {
	item, err := c.GetInstance(ctx, ref)
	if err != nil {
		return err
	}
	if isData(format) {
		return writeOutput(a.env.Stdout, format, "instance", item)
	}
	return instanceTable(a.env.Stdout, format, a.env.Now(), []InstanceItem{item})
}

func newGetNodesCommand(a *app, format *string) *cobra.Command {
	var watch bool
	cmd := &cobra.Command{
		Use:     "nodes [NAME]",
		Aliases: []string{"node", "no"},
		Short:   "List nodes, or show one",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if watch && len(args) == 0 {
				return watchNodes(cmd.Context(), a, c, *format)
			}
			items, err := c.ListNodes(cmd.Context())
			if err != nil {
				return err
			}
			return showOneOrList(a.env, *format, "node", args, items,
				func(it api.Item[api.Node]) (string, string) { return it.ID, it.Name },
				func(items []api.Item[api.Node]) error { return nodeTable(a.env.Stdout, *format, a.env.Now(), items) })
		},
	}
	addWatchFlag(cmd, &watch)
	return cmd
}

// showOneOrList sorts items by name and prints them in format, or, with
// one argument, only the item whose id or name it is (an error naming kind
// when there is none). table prints items in the table formats.
func showOneOrList[T any](env Env, format, kind string, args []string, items []T, key func(T) (id, name string), table func([]T) error) error {
	slices.SortFunc(items, func(x, y T) int {
		_, nx := key(x)
		_, ny := key(y)
		return strings.Compare(nx, ny)
	})
	data := isData(format)
	if len(args) == 1 {
		i := slices.IndexFunc(items, func(it T) bool {
			id, name := key(it)
			return id == args[0] || name == args[0]
		})
		if i < 0 {
			return fmt.Errorf("%s %q not found", kind, args[0])
		}
		if data {
			return writeOutput(env.Stdout, format, kind, items[i])
		}
		items = items[i : i+1]
	}
	if data {
		return writeOutput(env.Stdout, format, kind, nonNil(items))
	}
	if len(items) == 0 {
		return noResources(env.Stderr)
	}
	return table(items)
}

// nonNil makes an empty list print as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func newDeleteCommand(a *app) *cobra.Command {
	var wait bool
	var timeout time.Duration
	del := &cobra.Command{Use: "delete", Short: "Delete workloads or instances", Args: resourceArgs("workload or instance"), RunE: needResource}
	wl := &cobra.Command{
		Use:     "workload ID|NAME...",
		Aliases: []string{"workloads"},
		Short:   "Delete workloads and all their instances",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var insts []string
			if wait {
				c, err := a.client()
				if err != nil {
					return err
				}
				if insts, err = instancesOf(cmd.Context(), c, args); err != nil {
					return err
				}
			}
			return deleteThenWait(cmd.Context(), a, "workload", args, (*Client).DeleteWorkload, wait, insts, timeout)
		},
	}
	inst := &cobra.Command{
		Use:     "instance NAME|ID...",
		Aliases: []string{"instances"},
		Short:   "Delete instances (they are destroyed, then removed)",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return deleteThenWait(cmd.Context(), a, "instance", args, (*Client).DeleteInstance, wait, args, timeout)
		},
	}
	for _, c := range []*cobra.Command{wl, inst} {
		waitFlags(c, &wait, &timeout, "the instances are gone")
	}
	del.AddCommand(wl, inst)
	return del
}

// deleteEach deletes the resources named by ids with del, one after the
// other, saying so for each; it stops at the first error.
func deleteEach(ctx context.Context, a *app, kind string, ids []string, del func(*Client, context.Context, string) error) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := del(c, ctx, id); err != nil {
			return err
		}
		fmt.Fprintf(a.env.Stdout, "%s/%s deleted\n", kind, clean(id))
	}
	return nil
}

func newLogsCommand(a *app) *cobra.Command {
	var opts LogOptions
	cmd := &cobra.Command{
		Use:   "logs INSTANCE",
		Short: "Print the logs of an instance",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.Tail < 0 {
				return errors.New("--tail: must be >= 0")
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			return c.Logs(cmd.Context(), args[0], opts, a.env.Stdout)
		},
	}
	cmd.Flags().StringVarP(&opts.Container, "container", "c", "", "container of a pod (default: the first)")
	cmd.Flags().BoolVarP(&opts.Follow, "follow", "f", false, "keep streaming new lines")
	cmd.Flags().IntVar(&opts.Tail, "tail", 0, "only the last N lines (0: all)")
	return cmd
}
