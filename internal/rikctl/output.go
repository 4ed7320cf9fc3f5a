package rikctl

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/workload"
	"sigs.k8s.io/yaml"
)

// Output formats of the get commands.
const (
	FormatTable = "table"
	FormatWide  = "wide"
	FormatJSON  = "json"
	FormatYAML  = "yaml"
)

func checkFormat(f string) error {
	switch {
	case f == FormatTable, f == FormatWide, f == FormatJSON, f == FormatYAML, f == FormatName:
		return nil
	case strings.HasPrefix(f, prefixJSONPath), strings.HasPrefix(f, prefixGoTemplate):
		return checkTemplate(f)
	}
	return fmt.Errorf("unknown output format %q: want table, wide, json, yaml, name, jsonpath=TEMPLATE or go-template=TEMPLATE", f)
}

// noResources says that a list is empty, as kubectl does (on stderr: the
// output stays empty).
func noResources(stderr io.Writer) error {
	_, err := fmt.Fprintln(stderr, "No resources found")
	return err
}

// writeData writes v as JSON or YAML.
func writeData(w io.Writer, format string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding output: %w", err)
	}
	if format == FormatYAML {
		if b, err = yaml.JSONToYAML(b); err != nil {
			return fmt.Errorf("encoding output: %w", err)
		}
		_, err = w.Write(b)
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// writeTable writes rows under a header (if not nil), aligned like kubectl.
func writeTable(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	if header != nil {
		fmt.Fprintln(tw, strings.Join(header, "\t"))
	}
	for _, r := range rows {
		for i := range r {
			r[i] = cell(r[i])
		}
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// cell makes a value safe for one table cell: no tabs, newlines or other
// control characters (which a server could use to mangle a terminal).
func cell(s string) string {
	s = clean(s)
	if s == "" {
		return "<none>"
	}
	return s
}

// clean replaces control characters with spaces.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return ' '
		}
		return r
	}, s)
}

// age is a short duration like kubectl's: 42s, 5m, 3h, 2d.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return strconv.Itoa(int(d/time.Second)) + "s"
	case d < 2*time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	}
	return strconv.Itoa(int(d/(24*time.Hour))) + "d"
}

func portsString(ps []workload.PortMapping) string {
	parts := make([]string, 0, len(ps))
	for _, p := range ps {
		proto := p.Protocol
		if proto == "" {
			proto = "TCP"
		}
		parts = append(parts, fmt.Sprintf("%d->%d/%s", p.Port, p.TargetPort, proto))
	}
	return strings.Join(parts, ",")
}

func instanceTable(w io.Writer, format string, now time.Time, items []InstanceItem) error {
	return instanceRows(w, format, now, items, true)
}

func instanceRows(w io.Writer, format string, now time.Time, items []InstanceItem, withHeader bool) error {
	header := []string{"NAME", "WORKLOAD", "STATUS", "READY", "NODE", "IP", "PORTS", "RESTARTS", "AGE"}
	if format == FormatWide {
		header = append(header, "REASON", "ID")
	}
	rows := make([][]string, 0, len(items))
	for _, it := range items {
		v := it.Value
		name := firstNonEmpty(it.Name, v.Name)
		wl := firstNonEmpty(v.WorkloadName, v.WorkloadID)
		row := []string{name, wl, string(v.Status), strconv.FormatBool(v.Ready), v.Node, v.IP, portsString(v.Ports),
			strconv.Itoa(v.Restarts), age(now, v.CreatedAt)}
		if format == FormatWide {
			reason := v.Reason
			if v.Message != "" {
				reason = strings.TrimPrefix(reason+": "+v.Message, ": ")
			}
			row = append(row, reason, firstNonEmpty(it.ID, v.ID))
		}
		rows = append(rows, row)
	}
	if !withHeader {
		header = nil
	}
	return writeTable(w, header, rows)
}

// workloadTable prints workloads with their state (by name, from
// workloadStates).
func workloadTable(w io.Writer, format string, items []WorkloadItem, states map[string]workloadState) error {
	header := []string{"NAME", "KIND", "READY", "UP-TO-DATE", "REVISION", "MANAGED", "SOURCE", "PORTS"}
	if format == FormatWide {
		header = append(header, "RESTART", "REQUESTS", "ID")
	}
	rows := make([][]string, 0, len(items))
	for _, it := range items {
		v := it.Value
		name := firstNonEmpty(it.Name, v.Name)
		st, ok := states[name]
		if !ok {
			st = workloadState{ready: "0/0", upToDate: "-", revision: "-", managed: "no"}
		}
		row := []string{name, string(v.Kind), st.ready, st.upToDate, st.revision, st.managed,
			strings.Join(definitionSource(v), ","), portsString(v.HostPorts())}
		if format == FormatWide {
			cpu, mem := v.Requests()
			row = append(row, string(v.RestartPolicy), fmt.Sprintf("cpu=%dm,memory=%dMi", cpu, mem), it.ID)
		}
		rows = append(rows, row)
	}
	return writeTable(w, header, rows)
}

func nodeTable(w io.Writer, format string, now time.Time, items []api.Item[api.Node]) error {
	header := []string{"NAME", "STATUS", "KINDS", "CPU", "MEMORY", "INSTANCES", "LAST SEEN"}
	if format == FormatWide {
		header = append(header, "ADDRESS", "LOAD", "USAGE", "LABELS")
	}
	rows := make([][]string, 0, len(items))
	for _, it := range items {
		v := it.Value
		seen := "<unknown>"
		if t, err := time.Parse(time.RFC3339, v.LastHeartbeat); err == nil {
			seen = age(now, t) + " ago"
		}
		row := []string{firstNonEmpty(it.Name, v.Name), v.Status, strings.Join(v.Kinds, ","),
			fmt.Sprintf("%dm/%dm", v.Allocated.CPU, v.Capacity.CPU),
			fmt.Sprintf("%dMi/%dMi", v.Allocated.Memory, v.Capacity.Memory),
			strconv.Itoa(int(v.Instances)), seen}
		if format == FormatWide {
			labels := make([]string, 0, len(v.Labels))
			for k, l := range v.Labels {
				labels = append(labels, k+"="+l)
			}
			slices.Sort(labels)
			row = append(row, v.Address, strconv.FormatFloat(v.Load1, 'f', 2, 64),
				fmt.Sprintf("cpu=%dm,memory=%dMi,disk=%dMi", v.Usage.CPU, v.Usage.Memory, v.Usage.Disk),
				strings.Join(labels, ","))
		}
		rows = append(rows, row)
	}
	return writeTable(w, header, rows)
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}
