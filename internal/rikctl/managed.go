package rikctl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/workload"
)

// Managed workloads: apply, scale, rollout.

// Applied is the answer of workloads.apply and workloads.undo.
type Applied = api.Applied[workload.Workload]

// Revision is one revision of a managed workload.
type Revision = api.Revision[workload.Workload]

// Apply creates or updates a managed workload from a JSON definition.
func (c *Client) Apply(ctx context.Context, definition []byte) (Applied, error) {
	var out Applied
	return out, c.do(ctx, http.MethodPost, "workloads.apply", json.RawMessage(definition), &out)
}

// Scale sets the replicas of a managed workload (id or name).
func (c *Client) Scale(ctx context.Context, id string, replicas int) (api.Rollout, error) {
	var out api.Rollout
	return out, c.do(ctx, http.MethodPost, "workloads.scale", api.ScaleRequest{ID: id, Replicas: &replicas}, &out)
}

// Undo rolls a managed workload back to revision (0: the one before).
func (c *Client) Undo(ctx context.Context, id string, revision int) (Applied, error) {
	var out Applied
	return out, c.do(ctx, http.MethodPost, "workloads.undo", api.UndoRequest{ID: id, Revision: revision}, &out)
}

// Rollout returns the state of a managed workload.
func (c *Client) Rollout(ctx context.Context, id string) (api.Rollout, error) {
	var out api.Rollout
	return out, c.do(ctx, http.MethodGet, "workloads.rollout/"+url.PathEscape(id), nil, &out)
}

// Rollouts returns the state of every managed workload.
func (c *Client) Rollouts(ctx context.Context) ([]api.Rollout, error) {
	var out []api.Rollout
	return out, c.do(ctx, http.MethodGet, "workloads.rollouts", nil, &out)
}

// History lists the revisions kept of a managed workload.
func (c *Client) History(ctx context.Context, id string) ([]Revision, error) {
	var out []Revision
	return out, c.do(ctx, http.MethodGet, "workloads.history/"+url.PathEscape(id), nil, &out)
}

// rolloutWait holds --wait and --timeout of the rollout commands.
type rolloutWait struct {
	wait    bool
	timeout time.Duration
}

func (w *rolloutWait) add(cmd *cobra.Command, what string) {
	cmd.Flags().BoolVar(&w.wait, "wait", false, "wait until "+what+" is done (or fails, with the reason)")
	cmd.Flags().DurationVar(&w.timeout, "timeout", 5*time.Minute, "with --wait, give up after this long")
}

// pollEvery is how often --wait asks for the rollout's state.
var pollEvery = time.Second

// waitRollout polls the rollout of the workload ref names until it is done
// (Complete with every instance of revision at least minRevision
// available), failed (an error with its reason) or timeout passes.
func waitRollout(ctx context.Context, a *app, c *Client, ref string, minRevision int, timeout time.Duration) error {
	last := ""
	return poll(ctx, timeout, pollEvery, func(ctx context.Context) (string, error) {
		r, err := c.Rollout(ctx, ref)
		if err != nil {
			return "", err
		}
		if line := rolloutLine(r); line != last {
			fmt.Fprintln(a.env.Stdout, line)
			last = line
		}
		if r.Revision >= minRevision {
			switch done, ok := r.Done(); {
			case done && !ok:
				return "", fmt.Errorf("workload/%s: rollout of revision %d failed: %s: %s", clean(r.Workload), r.Revision, clean(r.Reason), clean(r.Message))
			case done && r.Instances == r.Replicas && r.Available == r.Replicas:
				return "", nil
			}
		}
		return fmt.Sprintf("the rollout of workload/%s (revision %d: %s)", clean(ref), r.Revision, firstNonEmpty(clean(r.Message), r.Phase)), nil
	})
}

// rolloutLine is one line of rollout status.
func rolloutLine(r api.Rollout) string {
	line := fmt.Sprintf("workload/%s revision %d: %s, %d/%d ready, %d up-to-date, %d available",
		clean(r.Workload), r.Revision, clean(r.Phase), r.Ready, r.Replicas, r.UpToDate, r.Available)
	if r.Reason != "" {
		line += ", " + clean(r.Reason)
	}
	if r.Message != "" && r.Phase == api.RolloutFailed {
		line += ": " + clean(r.Message)
	}
	return line
}

func newApplyCommand(a *app) *cobra.Command {
	var file string
	var wf rolloutWait
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Create or update managed workloads (their replicas kept, changes rolled out)",
		Long: "apply creates or updates the workloads a file defines (JSON or YAML; several as a YAML\n" +
			"stream separated by --- or a JSON array) and makes them managed: the controller keeps\n" +
			"their replicas and rolls a changed definition out as a new revision.",
		Example: "  rikctl apply -f web.yaml\n" +
			"  rikctl apply -f stack.yaml --wait --timeout 2m\n" +
			"  cat web.json | rikctl apply -f -",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			defs, err := readDefinitions(a.env.Stdin, file)
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			var applied []Applied
			for _, def := range defs {
				res, err := c.Apply(cmd.Context(), def)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.env.Stdout, "workload/%s %s (revision %d)\n", clean(res.Workload.Name), appliedVerb(res), res.Revision)
				applied = append(applied, res)
			}
			if !wf.wait {
				return nil
			}
			for _, res := range applied {
				if err := waitRollout(cmd.Context(), a, c, res.Workload.Name, res.Revision, wf.timeout); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "definition file (JSON or YAML, one or many), - for stdin")
	_ = cmd.MarkFlagRequired("file")
	wf.add(cmd, "every rollout")
	return cmd
}

func appliedVerb(res Applied) string {
	switch {
	case res.Created:
		return "created"
	case res.Changed:
		return "configured"
	}
	return "unchanged"
}

// readDefinitions reads one or many definitions from file (- for stdin):
// a YAML stream of documents separated by "---" lines, or a JSON array,
// each checked locally. Empty documents are skipped.
func readDefinitions(stdin io.Reader, file string) ([][]byte, error) {
	data, name, err := readSource(stdin, file, "definitions", 16*workload.MaxDefinitionBytes)
	if err != nil {
		return nil, err
	}
	docs, err := splitDocuments(data)
	if err != nil {
		return nil, fmt.Errorf("definitions %s: %w", name, err)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("definitions %s: no workload in it", name)
	}
	out := make([][]byte, 0, len(docs))
	for i, doc := range docs {
		where := name
		if len(docs) > 1 {
			where = fmt.Sprintf("%s (document %d)", name, i+1)
		}
		def, err := checkDefinition(where, doc)
		if err != nil {
			return nil, err
		}
		out = append(out, def)
	}
	return out, nil
}

// splitDocuments splits a JSON array into its elements, or a YAML stream
// at its "---" lines, dropping empty documents.
func splitDocuments(data []byte) ([][]byte, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '[' && json.Valid(trimmed) {
		var raw []json.RawMessage
		if err := json.Unmarshal(trimmed, &raw); err != nil {
			return nil, err
		}
		out := make([][]byte, len(raw))
		for i, r := range raw {
			out[i] = r
		}
		return out, nil
	}
	var docs [][]byte
	var cur bytes.Buffer
	flush := func() {
		if doc := bytes.TrimSpace(cur.Bytes()); len(doc) > 0 && !onlyComments(doc) {
			docs = append(docs, bytes.Clone(cur.Bytes()))
		}
		cur.Reset()
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), len(data)+1)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "---") && strings.TrimSpace(strings.SplitN(line[3:], "#", 2)[0]) == "" {
			flush()
			continue
		}
		cur.WriteString(line + "\n")
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	flush()
	return docs, nil
}

func onlyComments(doc []byte) bool {
	for line := range strings.SplitSeq(string(doc), "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

func newScaleCommand(a *app) *cobra.Command {
	scale := &cobra.Command{Use: "scale", Short: "Set the replicas of a managed workload", Args: resourceArgs("workload"), RunE: needResource,
		Example: "  rikctl scale workload web --replicas 5"}
	var replicas int
	var wf rolloutWait
	wl := &cobra.Command{
		Use:     "workload NAME --replicas N",
		Aliases: []string{"workloads", "wl"},
		Short:   "Set the replicas of a managed workload (one made by apply)",
		Example: "  rikctl scale workload web --replicas 10\n" +
			"  rikctl scale workload web --replicas 0 --wait",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if replicas < 0 || replicas > workload.MaxReplicas {
				return fmt.Errorf("--replicas: must be between 0 and %d", workload.MaxReplicas)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			r, err := c.Scale(cmd.Context(), args[0], replicas)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.env.Stdout, "workload/%s scaled to %d\n", clean(r.Workload), r.Replicas)
			if !wf.wait {
				return nil
			}
			return waitRollout(cmd.Context(), a, c, args[0], r.Revision, wf.timeout)
		},
	}
	wl.Flags().IntVar(&replicas, "replicas", -1, "number of instances to keep")
	_ = wl.MarkFlagRequired("replicas")
	wf.add(wl, "the workload has that many instances available")
	scale.AddCommand(wl)
	return scale
}

func newRolloutCommand(a *app) *cobra.Command {
	rollout := &cobra.Command{Use: "rollout", Short: "Show or undo the rollouts of a managed workload", Args: resourceArgs("history, status or undo"), RunE: needResource,
		Example: "  rikctl rollout status web --wait\n  rikctl rollout history web\n  rikctl rollout undo web --to-revision 2"}
	rollout.AddCommand(newRolloutHistoryCommand(a), newRolloutStatusCommand(a), newRolloutUndoCommand(a))
	return rollout
}

func newRolloutHistoryCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "history WORKLOAD",
		Short:   "List the revisions kept of a managed workload",
		Example: "  rikctl rollout history web",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			revs, err := c.History(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			rows := make([][]string, 0, len(revs))
			for _, r := range revs {
				cur := "-"
				if r.Current {
					cur = "*"
				}
				rows = append(rows, []string{strconv.Itoa(r.Revision), cur, r.CreatedAt.UTC().Format(time.RFC3339),
					firstNonEmpty(r.Cause, "-"), strings.Join(definitionSource(r.Definition), ",")})
			}
			return writeTable(a.env.Stdout, []string{"REVISION", "CURRENT", "CREATED", "CAUSE", "SOURCE"}, rows)
		},
	}
}

func newRolloutStatusCommand(a *app) *cobra.Command {
	var wf rolloutWait
	var format string
	cmd := &cobra.Command{
		Use:     "status WORKLOAD",
		Short:   "Show where the rollout of a managed workload stands",
		Example: "  rikctl rollout status web\n  rikctl rollout status web -o json\n  rikctl rollout status web --wait --timeout 10m",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "" && format != FormatJSON && format != FormatYAML {
				return fmt.Errorf("--output: want json or yaml, got %q", format)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			if wf.wait {
				return waitRollout(cmd.Context(), a, c, args[0], 0, wf.timeout)
			}
			r, err := c.Rollout(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if format == FormatJSON || format == FormatYAML {
				return writeData(a.env.Stdout, format, r)
			}
			fmt.Fprintln(a.env.Stdout, rolloutLine(r))
			if r.Message != "" && r.Phase != api.RolloutFailed {
				fmt.Fprintln(a.env.Stdout, "  "+clean(r.Message))
			}
			return nil
		},
	}
	wf.add(cmd, "the rollout")
	cmd.Flags().StringVarP(&format, "output", "o", "", "json or yaml (default: one line)")
	return cmd
}

func newRolloutUndoCommand(a *app) *cobra.Command {
	var to int
	var wf rolloutWait
	cmd := &cobra.Command{
		Use:   "undo WORKLOAD [--to-revision N]",
		Short: "Roll a managed workload back to its previous revision, or to --to-revision",
		Example: "  rikctl rollout undo web\n" +
			"  rikctl rollout undo web --to-revision 3 --wait",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to < 0 {
				return errors.New("--to-revision: must be positive")
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			res, err := c.Undo(cmd.Context(), args[0], to)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.env.Stdout, "workload/%s rolled back (revision %d)\n", clean(res.Workload.Name), res.Revision)
			if !wf.wait {
				return nil
			}
			return waitRollout(cmd.Context(), a, c, res.Workload.Name, res.Revision, wf.timeout)
		},
	}
	cmd.Flags().IntVar(&to, "to-revision", 0, "revision to go back to (default: the previous one)")
	wf.add(cmd, "the rollout")
	return cmd
}

// definitionSource lists the images or the rootfs of a definition.
func definitionSource(v workload.Workload) []string {
	var source []string
	for _, c := range v.Spec.Containers {
		source = append(source, c.Image)
	}
	if v.Spec.Function != nil {
		source = append(source, v.Spec.Function.Execution.Rootfs)
	}
	return source
}

// workloadState is what get workloads shows of a workload's state.
type workloadState struct{ ready, upToDate, revision, managed string }

// workloadStates is the state of every workload by name: managed ones from
// their rollout, unmanaged ones from their instances (ready of live).
func workloadStates(ctx context.Context, c *Client) (map[string]workloadState, error) {
	rollouts, err := c.Rollouts(ctx)
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusNotFound {
		rollouts, err = nil, nil // a controller without managed workloads (RIK's)
	}
	if err != nil {
		return nil, err
	}
	insts, err := c.ListInstances(ctx)
	if err != nil {
		return nil, err
	}
	type count struct{ ready, live int }
	counts := map[string]count{}
	for _, it := range insts {
		v := it.Value
		if v.DeleteRequested || v.Status.Terminal() {
			continue
		}
		n := counts[v.WorkloadName]
		n.live++
		if v.Ready {
			n.ready++
		}
		counts[v.WorkloadName] = n
	}
	out := map[string]workloadState{}
	for name, n := range counts {
		out[name] = workloadState{ready: fmt.Sprintf("%d/%d", n.ready, n.live), upToDate: "-", revision: "-", managed: "no"}
	}
	for _, r := range rollouts {
		out[r.Workload] = workloadState{ready: fmt.Sprintf("%d/%d", r.Ready, r.Replicas), upToDate: strconv.Itoa(r.UpToDate),
			revision: strconv.Itoa(r.Revision), managed: "yes"}
	}
	return out, nil
}
