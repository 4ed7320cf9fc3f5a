package rikctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/workload"
)

// Events returns the kept history of an object (api.EventKind*), oldest
// first.
func (c *Client) Events(ctx context.Context, kind, name string) ([]api.Event, error) {
	var out []api.Event
	q := url.Values{"kind": {kind}, "name": {name}}
	return out, c.do(ctx, http.MethodGet, "events.list?"+q.Encode(), nil, &out)
}

func newDescribeCommand(a *app) *cobra.Command {
	d := &cobra.Command{
		Use:   "describe",
		Short: "Show a workload, instance or node in detail, with its events",
		Example: "  rikctl describe instance httpd-local-x7k2p\n" +
			"  rikctl describe node node1",
		Args: resourceArgs("workload, instance or node"), RunE: needResource,
	}
	for _, kind := range []string{api.EventKindWorkload, api.EventKindInstance, api.EventKindNode} {
		d.AddCommand(&cobra.Command{
			Use:     kind + " NAME",
			Aliases: []string{kind + "s"},
			Short:   "Describe " + article(kind) + " " + kind + ": its definition, status, conditions and events",
			Example: "  rikctl describe " + kind + " NAME",
			Args:    cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := a.client()
				if err != nil {
					return err
				}
				return describe(cmd.Context(), c, a.env.Stdout, a.env.Now(), kind, args[0])
			},
		})
	}
	return d
}

// describe prints one object and its events.
func describe(ctx context.Context, c *Client, w io.Writer, now time.Time, kind, ref string) error {
	var fields [][2]string
	var name string
	var err error
	switch kind {
	case api.EventKindWorkload:
		name, fields, err = describeWorkload(ctx, c, ref)
	case api.EventKindInstance:
		name, fields, err = describeInstance(ctx, c, ref)
	default:
		name, fields, err = describeNode(ctx, c, ref)
	}
	if err != nil {
		return err
	}
	evs, err := c.Events(ctx, kind, name)
	if err != nil {
		return err
	}
	return writeDescription(w, now, fields, evs)
}

// writeDescription prints "Field:  value" lines, then the events.
func writeDescription(w io.Writer, now time.Time, fields [][2]string, evs []api.Event) error {
	rows := make([][]string, 0, len(fields))
	for _, f := range fields {
		rows = append(rows, []string{f[0] + ":", f[1]})
	}
	if err := writeTable(w, nil, rows); err != nil {
		return err
	}
	if len(evs) == 0 {
		_, err := fmt.Fprintln(w, "Events:\t<none>")
		return err
	}
	fmt.Fprintln(w, "Events:")
	rows = rows[:0]
	for _, ev := range evs {
		when := age(now, ev.Time)
		if ev.Count > 1 {
			when += " (x" + strconv.Itoa(ev.Count) + ")"
		}
		rows = append(rows, []string{"  " + when, ev.Reason, ev.Message})
	}
	return writeTable(w, []string{"  AGE", "REASON", "MESSAGE"}, rows)
}

func describeWorkload(ctx context.Context, c *Client, ref string) (string, [][2]string, error) {
	wls, err := c.ListWorkloads(ctx)
	if err != nil {
		return "", nil, err
	}
	i := slices.IndexFunc(wls, func(w WorkloadItem) bool { return w.Name == ref || w.ID == ref })
	if i < 0 {
		return "", nil, fmt.Errorf("workload %q: not found", ref)
	}
	wl := wls[i]
	insts, err := c.WorkloadInstances(ctx, wl.ID)
	if err != nil {
		return "", nil, err
	}
	def := wl.Value
	fields := [][2]string{{"Name", wl.Name}, {"ID", wl.ID}, {"Kind", string(def.Kind)},
		{"Replicas", strconv.Itoa(def.Replicas)}, {"Restart policy", string(def.RestartPolicy)}}
	for _, ct := range def.Spec.Containers {
		fields = append(fields, [2]string{"Container " + ct.Name, ct.Image + commandLine(ct.Command, ct.Args)})
	}
	if f := def.Spec.Function; f != nil {
		fields = append(fields, [2]string{"Rootfs", f.Execution.Rootfs})
	}
	fields = append(fields, [2]string{"Instances", instanceSummary(insts)})
	return wl.Name, fields, nil
}

// commandLine is " (cmd args...)", or "" when neither is set.
func commandLine(cmd, args []string) string {
	all := append(slices.Clone(cmd), args...)
	if len(all) == 0 {
		return ""
	}
	return " (" + strings.Join(all, " ") + ")"
}

// instanceSummary counts instances by status and readiness: "3: 2 RUNNING
// (2 ready), 1 PENDING".
func instanceSummary(insts []InstanceItem) string {
	if len(insts) == 0 {
		return "0"
	}
	counts := map[workload.Status]int{}
	ready := 0
	for _, it := range insts {
		counts[it.Value.Status]++
		if it.Value.Ready {
			ready++
		}
	}
	var parts []string
	for _, st := range []workload.Status{workload.StatusRunning, workload.StatusCreating, workload.StatusPending,
		workload.StatusFailed, workload.StatusDestroying, workload.StatusTerminated, workload.StatusUnknown} {
		if n := counts[st]; n > 0 {
			p := fmt.Sprintf("%d %s", n, st)
			if st == workload.StatusRunning {
				p += fmt.Sprintf(" (%d ready)", ready)
			}
			parts = append(parts, p)
		}
	}
	return fmt.Sprintf("%d: %s", len(insts), strings.Join(parts, ", "))
}

func describeInstance(ctx context.Context, c *Client, ref string) (string, [][2]string, error) {
	it, err := c.GetInstance(ctx, ref)
	if err != nil {
		return "", nil, err
	}
	v := it.Value
	fields := [][2]string{{"Name", it.Name}, {"ID", it.ID}, {"Workload", firstNonEmpty(v.WorkloadName, v.WorkloadID)},
		{"Kind", string(v.Kind)}, {"Status", string(v.Status)}, {"Node", firstNonEmpty(v.Node, "<none>")},
		{"IP", firstNonEmpty(v.IP, "<none>")}, {"Ports", portsString(v.Ports)}, {"Restarts", strconv.Itoa(v.Restarts)}}
	if v.Revision > 0 {
		fields = append(fields, [2]string{"Revision", strconv.Itoa(v.Revision)})
	}
	if v.Reason != "" || v.Message != "" {
		fields = append(fields, [2]string{"Reason", v.Reason}, [2]string{"Message", v.Message})
	}
	if v.ExitCode != nil {
		fields = append(fields, [2]string{"Exit code", strconv.Itoa(*v.ExitCode)})
	}
	fields = append(fields, [2]string{"Created", v.CreatedAt.Format(time.RFC3339)}, [2]string{"Updated", v.UpdatedAt.Format(time.RFC3339)})
	for _, cond := range instanceConditions(v) {
		fields = append(fields, [2]string{"Condition " + cond[0], cond[1]})
	}
	return it.Name, fields, nil
}

// instanceConditions are kubectl-like conditions of an instance:
// Scheduled, Running and Ready, each True or False.
func instanceConditions(v workload.Instance) [][2]string {
	b := func(ok bool) string {
		if ok {
			return "True"
		}
		return "False"
	}
	return [][2]string{
		{"Scheduled", b(v.Node != "")},
		{"Running", b(v.Status == workload.StatusRunning)},
		{"Ready", b(v.Ready)},
	}
}

func describeNode(ctx context.Context, c *Client, ref string) (string, [][2]string, error) {
	nodes, err := c.ListNodes(ctx)
	if err != nil {
		return "", nil, err
	}
	i := slices.IndexFunc(nodes, func(n api.Item[api.Node]) bool { return n.Name == ref })
	if i < 0 {
		return "", nil, errors.New("node " + strconv.Quote(ref) + ": not found")
	}
	n := nodes[i].Value
	labels := make([]string, 0, len(n.Labels))
	for _, k := range slices.Sorted(maps.Keys(n.Labels)) {
		labels = append(labels, k+"="+n.Labels[k])
	}
	fields := [][2]string{{"Name", n.Name}, {"Status", n.Status}, {"Address", n.Address},
		{"Kinds", strings.Join(n.Kinds, ",")}, {"Labels", strings.Join(labels, ",")},
		{"Capacity", fmt.Sprintf("cpu %dm, memory %d MiB", n.Capacity.CPU, n.Capacity.Memory)},
		{"Allocated", fmt.Sprintf("cpu %dm, memory %d MiB", n.Allocated.CPU, n.Allocated.Memory)},
		{"Instances", strconv.Itoa(int(n.Instances))}, {"Last heartbeat", firstNonEmpty(n.LastHeartbeat, "<none>")}}
	return n.Name, fields, nil
}

// article is the indefinite article of a kind's name.
func article(kind string) string {
	if kind != "" && strings.ContainsRune("aeiou", rune(kind[0])) {
		return "an"
	}
	return "a"
}
