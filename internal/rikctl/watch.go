package rikctl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/workload"
)

// Event is one server-sent event of the controller's stream.
type Event struct {
	ID   string // the store revision it resumes from
	Name string // api.Event*
	Data []byte
}

// Reconnection backoff of WatchEvents.
const (
	watchBackoffMin = 200 * time.Millisecond
	watchBackoffMax = 5 * time.Second
)

// WatchOptions select what WatchEvents follows.
type WatchOptions struct {
	Kinds []string // api.EventKinds to follow; nil: all
	// Since is the id to resume from: "" follows from now, "0" sends
	// every record first (ending with a sync event).
	Since string
	// Retrying, if set, is told why the stream broke before each
	// reconnection.
	Retrying func(err error, in time.Duration)
}

// fnError is an error of WatchEvents' callback: it ends the watch.
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

// WatchEvents follows the controller's event stream and calls fn for each
// event until ctx is done (nil) or fn fails. When the stream breaks (the
// controller restarts, the connection drops) it reconnects with backoff
// and resumes from the last id received: the controller sends what was
// missed, or a resync. Answers that reconnecting cannot fix (4xx: bad
// token, no right) end it.
func (c *Client) WatchEvents(ctx context.Context, opts WatchOptions, fn func(Event) error) error {
	since, wait := opts.Since, watchBackoffMin
	for {
		last, got, err := c.streamEvents(ctx, opts.Kinds, since, fn)
		if last != "" {
			since = last
		}
		var fe fnError
		var apiErr *APIError
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.As(err, &fe):
			return fe.err
		case errors.As(err, &apiErr) && apiErr.StatusCode >= 400 && apiErr.StatusCode < 500:
			return err
		}
		if got {
			wait = watchBackoffMin
		}
		if opts.Retrying != nil {
			opts.Retrying(err, wait)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(wait*2, watchBackoffMax)
	}
}

// streamEvents reads one connection of the stream. It returns the last id
// received, whether any event came, and why it ended.
func (c *Client) streamEvents(ctx context.Context, kinds []string, since string, fn func(Event) error) (last string, got bool, err error) {
	q := url.Values{}
	if len(kinds) > 0 {
		q.Set("kinds", strings.Join(kinds, ","))
	}
	if since != "" {
		q.Set("since", since)
	}
	resp, err := c.send(ctx, http.MethodGet, "events?"+q.Encode(), nil)
	if err != nil {
		return "", false, err
	}
	defer resp.Body.Close()
	if err := checkStatus(resp); err != nil {
		return "", false, err
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), maxEventBytes)
	var ev Event
	var data bytes.Buffer
	for sc.Scan() {
		line := sc.Text()
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch {
		case line == "":
			if ev.ID != "" {
				last = ev.ID
			}
			if ev.Name != "" && data.Len() > 0 {
				got = true
				ev.Data = bytes.Clone(data.Bytes())
				if err := fn(ev); err != nil {
					return last, got, fnError{err}
				}
			}
			ev = Event{}
			data.Reset()
		case field == "id":
			ev.ID = value
		case field == "event":
			ev.Name = value
		case field == "data":
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(value)
		}
	}
	if err := sc.Err(); err != nil {
		return last, got, fmt.Errorf("reading events: %w", err)
	}
	return last, got, errors.New("event stream ended")
}

// watchSpec is how `get -w` shows one kind of record.
type watchSpec[T any] struct {
	kind    string         // api.EventInstance, ...
	deleted string         // the event of a removal ("": none)
	id      func(T) string // its id (as the sync event names it)
	name    func(T) string // to sort the first listing
	keep    func(T) bool   // nil: every record
	gone    func(T) T      // how a removal is shown
	// pad is it as wide as it may get (nil: gone): the first listing's
	// pads set the widths of the columns.
	pad   func(T) T
	table func(io.Writer, []T) error // header and rows
}

// watcher prints a table of records, then one row per change, aligned
// with the header and never the same row twice for a record.
type watcher[T any] struct {
	spec watchSpec[T]
	out  io.Writer
	data string // FormatJSON or FormatYAML, else "": a table
	// base is the first listing and how each would show once removed:
	// they set the widths of the columns.
	base    []T
	shown   int // how many of base are the first listing
	pending []T // records of a resync, before its sync event
	known   map[string]T
	printed map[string]string // the last row (or document) of each record
	started bool
}

func newWatcher[T any](spec watchSpec[T], out io.Writer, format string) *watcher[T] {
	w := &watcher[T]{spec: spec, out: out, known: map[string]T{}, printed: map[string]string{}}
	if isData(format) {
		w.data = format
	}
	return w
}

// handle takes one event of the stream.
func (w *watcher[T]) handle(ev Event) error {
	switch ev.Name {
	case w.spec.kind, w.spec.deleted:
		var it T
		if err := json.Unmarshal(ev.Data, &it); err != nil {
			return fmt.Errorf("decoding %s event: %w", ev.Name, err)
		}
		if w.spec.keep != nil && !w.spec.keep(it) {
			return nil
		}
		if ev.Name == w.spec.deleted {
			delete(w.known, w.spec.id(it))
			return w.show(w.spec.gone(it), w.spec.id(it))
		}
		if !w.started {
			w.pending = append(w.pending, it)
			return nil
		}
		w.known[w.spec.id(it)] = it
		return w.show(it, w.spec.id(it))
	case api.EventSync:
		var s api.Sync
		if err := json.Unmarshal(ev.Data, &s); err != nil {
			return fmt.Errorf("decoding sync event: %w", err)
		}
		return w.sync(s)
	}
	return nil
}

// sync ends a resync: the first one prints the table; a later one (after
// a reconnection) shows what changed and what went meanwhile.
func (w *watcher[T]) sync(s api.Sync) error {
	items := w.pending
	w.pending = nil
	if !w.started {
		w.started = true
		slices.SortFunc(items, func(x, y T) int { return strings.Compare(w.spec.name(x), w.spec.name(y)) })
		w.base, w.shown = slices.Clone(items), len(items)
		for _, it := range items {
			w.known[w.spec.id(it)] = it
			pad := w.spec.pad
			if pad == nil {
				pad = w.spec.gone
			}
			w.base = append(w.base, pad(it))
		}
		return w.first(items)
	}
	for _, it := range items {
		w.known[w.spec.id(it)] = it
		if err := w.show(it, w.spec.id(it)); err != nil {
			return err
		}
	}
	exist := map[string]bool{}
	for _, id := range slices.Concat(s.Instances, s.Workloads, s.Nodes) {
		exist[id] = true
	}
	for _, id := range slices.Sorted(maps.Keys(w.known)) {
		if !exist[id] {
			it := w.known[id]
			delete(w.known, id)
			if err := w.show(w.spec.gone(it), id); err != nil {
				return err
			}
		}
	}
	return nil
}

// first prints the first listing.
func (w *watcher[T]) first(items []T) error {
	if w.data != "" {
		for _, it := range items {
			if err := w.show(it, w.spec.id(it)); err != nil {
				return err
			}
		}
		return nil
	}
	var buf bytes.Buffer
	if err := w.spec.table(&buf, w.base); err != nil {
		return err
	}
	lines := strings.SplitAfter(buf.String(), "\n")
	for i, it := range items {
		w.printed[w.spec.id(it)] = lines[i+1]
	}
	_, err := io.WriteString(w.out, strings.Join(lines[:1+w.shown], ""))
	return err
}

// show prints it as a row (or document) unless it is what was last
// printed for id.
func (w *watcher[T]) show(it T, id string) error {
	var buf bytes.Buffer
	if w.data != "" {
		if w.data == FormatYAML {
			buf.WriteString("---\n")
		}
		if err := writeOutput(&buf, w.data, w.spec.kind, it); err != nil {
			return err
		}
	} else {
		// The row as a table of the first listing and it would show it:
		// as wide as the header and the first rows.
		if err := w.spec.table(&buf, append(slices.Clip(w.base), it)); err != nil {
			return err
		}
		lines := strings.SplitAfter(strings.TrimSuffix(buf.String(), "\n"), "\n")
		buf.Reset()
		buf.WriteString(lines[len(lines)-1] + "\n")
	}
	row := buf.String()
	if w.printed[id] == row {
		return nil
	}
	w.printed[id] = row
	_, err := w.out.Write(buf.Bytes())
	return err
}

// runWatch prints the records of spec as they are, then every change,
// until ctx is done, reconnecting (and resuming) when the stream breaks.
func runWatch[T any](ctx context.Context, a *app, c *Client, format string, spec watchSpec[T]) error {
	w := newWatcher(spec, a.env.Stdout, format)
	return c.WatchEvents(ctx, WatchOptions{Kinds: []string{spec.kind}, Since: "0",
		Retrying: func(err error, in time.Duration) {
			fmt.Fprintf(a.env.Stderr, "watch: %v; reconnecting in %v\n", err, in)
		}}, w.handle)
}

// deletedName marks the name of a removed workload or node.
func deletedName(name string) string { return name + " (deleted)" }

func watchWorkloads(ctx context.Context, a *app, c *Client, format string) error {
	return runWatch(ctx, a, c, format, watchSpec[WorkloadItem]{
		kind: api.EventWorkload, deleted: api.EventWorkloadDeleted,
		id:   func(it WorkloadItem) string { return it.ID },
		name: func(it WorkloadItem) string { return firstNonEmpty(it.Name, it.Value.Name) },
		gone: func(it WorkloadItem) WorkloadItem {
			it.Name, it.Value.Name = deletedName(firstNonEmpty(it.Name, it.Value.Name)), ""
			return it
		},
		// The READY, UP-TO-DATE and REVISION columns as they are when a
		// row is printed (a workload's own events do not carry them).
		table: func(w io.Writer, items []WorkloadItem) error {
			states, err := workloadStates(ctx, c)
			if err != nil {
				return err
			}
			return workloadTable(w, format, items, states)
		},
	})
}

func watchNodes(ctx context.Context, a *app, c *Client, format string) error {
	return runWatch(ctx, a, c, format, watchSpec[api.Item[api.Node]]{
		kind: api.EventNode, deleted: api.EventNodeDeleted,
		id:   func(it api.Item[api.Node]) string { return it.ID },
		name: func(it api.Item[api.Node]) string { return firstNonEmpty(it.Name, it.Value.Name) },
		gone: nodeGone,
		// As wide as the widest status a node takes (NotReady).
		pad: func(it api.Item[api.Node]) api.Item[api.Node] {
			it = nodeGone(it)
			it.Value.Status = strings.Repeat("-", max(len(it.Value.Status), len("NotReady")))
			return it
		},
		table: func(w io.Writer, items []api.Item[api.Node]) error { return nodeTable(w, format, a.env.Now(), items) },
	})
}

func nodeGone(it api.Item[api.Node]) api.Item[api.Node] {
	it.Name, it.Value.Name = deletedName(firstNonEmpty(it.Name, it.Value.Name)), ""
	return it
}

// watchInstances follows the instances (of the workload ofWorkload, id or
// name, when not ""). A removed one shows as TERMINATED.
func watchInstances(ctx context.Context, a *app, c *Client, format, ofWorkload string) error {
	return runWatch(ctx, a, c, format, watchSpec[InstanceItem]{
		kind: api.EventInstance,
		id:   func(it InstanceItem) string { return firstNonEmpty(it.ID, it.Value.ID) },
		name: func(it InstanceItem) string { return firstNonEmpty(it.Name, it.Value.Name) },
		keep: func(it InstanceItem) bool {
			return ofWorkload == "" || it.Value.WorkloadID == ofWorkload || it.Value.WorkloadName == ofWorkload
		},
		gone: func(it InstanceItem) InstanceItem {
			if !it.Value.Status.Terminal() {
				it.Value.Reason, it.Value.Message = api.ReasonDeleted, ""
			}
			it.Value.Status = workload.StatusTerminated
			return it
		},
		table: func(w io.Writer, items []InstanceItem) error { return instanceTable(w, format, a.env.Now(), items) },
	})
}

// addWatchFlag adds -w to a get command.
func addWatchFlag(cmd *cobra.Command, watch *bool) {
	cmd.Flags().BoolVarP(watch, "watch", "w", false,
		"after listing, print every change (until interrupted; resumes after the controller restarts)")
}
