package rikctl

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/rik-org/rik/internal/workload"
)

// waitPoll is how often --wait looks at the instances.
const waitPoll = 500 * time.Millisecond

// DefaultWaitTimeout bounds --wait unless --timeout says otherwise.
const DefaultWaitTimeout = 5 * time.Minute

// waitFlags adds --wait and --timeout to cmd.
func waitFlags(cmd *cobra.Command, wait *bool, timeout *time.Duration, until string) {
	cmd.Flags().BoolVar(wait, "wait", false, "wait until "+until+" (fails with the instance's reason)")
	cmd.Flags().DurationVar(timeout, "timeout", DefaultWaitTimeout, "how long --wait waits")
}

// runningState says whether an instance is RUNNING (done), still on its
// way (neither), or will not get there (an error with its reason).
func runningState(it InstanceItem) (bool, error) {
	v := it.Value
	switch {
	case v.DeleteRequested:
		return false, fmt.Errorf("instance/%s is being deleted", clean(it.Name))
	case v.Status == workload.StatusRunning:
		return true, nil
	case v.Status.Terminal():
		return false, fmt.Errorf("instance/%s is %s: %s", clean(it.Name), v.Status, clean(reasonOf(v)))
	}
	return false, nil
}

// reasonOf is an instance's reason, message and exit code, as one line.
func reasonOf(v workload.Instance) string {
	s := firstNonEmpty(v.Reason, "no reason given")
	if v.Message != "" {
		s += ": " + v.Message
	}
	if v.ExitCode != nil {
		s += fmt.Sprintf(" (exit code %d)", *v.ExitCode)
	}
	return s
}

// waitRunning waits until every instance named is RUNNING, failing at the
// first one that ends otherwise, or after timeout.
func waitRunning(ctx context.Context, c *Client, names []string, timeout time.Duration) error {
	return poll(ctx, timeout, waitPoll, func(ctx context.Context) (string, error) {
		for _, name := range names {
			it, err := c.GetInstance(ctx, name)
			if err != nil {
				return "", err
			}
			done, err := runningState(it)
			if err != nil {
				return "", err
			}
			if !done {
				return fmt.Sprintf("instance/%s to be RUNNING (it is %s%s)", clean(name), it.Value.Status, optional(it.Value.Reason)), nil
			}
		}
		return "", nil
	})
}

func optional(reason string) string {
	if reason == "" {
		return ""
	}
	return ": " + clean(reason)
}

// waitGone waits until every instance named is gone (removed once its
// node confirmed it stopped), or after timeout.
func waitGone(ctx context.Context, c *Client, names []string, timeout time.Duration) error {
	return poll(ctx, timeout, waitPoll, func(ctx context.Context) (string, error) {
		for _, name := range names {
			it, err := c.GetInstance(ctx, name)
			var apiErr *APIError
			if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusNotFound {
				continue
			}
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("instance/%s to be gone (it is %s%s)", clean(name), it.Value.Status, optional(it.Value.Reason)), nil
		}
		return "", nil
	})
}

// poll calls check every interval until it reports nothing left to wait
// for ("") or fails; after timeout it fails saying what it waited for.
func poll(ctx context.Context, timeout, every time.Duration, check func(context.Context) (string, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := "" // what the previous check waited for
	for {
		waiting, err := check(ctx)
		switch {
		case err != nil && ctx.Err() != nil && last != "":
			// The time ran out during a request: say what was awaited.
			return fmt.Errorf("timed out after %s waiting for %s", timeout, last)
		case err != nil && ctx.Err() != nil:
			return fmt.Errorf("timed out after %s waiting: %w", timeout, err)
		case err != nil:
			return err
		case waiting == "":
			return nil
		}
		last = waiting
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out after %s waiting for %s", timeout, waiting)
		case <-time.After(every):
		}
	}
}

// instancesOf lists the names of the instances of the workloads named,
// which deleting them destroys.
func instancesOf(ctx context.Context, c *Client, workloads []string) ([]string, error) {
	var names []string
	for _, wl := range workloads {
		insts, err := c.WorkloadInstances(ctx, wl)
		if err != nil {
			return nil, err
		}
		for _, it := range insts {
			names = append(names, it.Name)
		}
	}
	return names, nil
}

// deleteThenWait is deleteEach, then (with wait) waits until the
// instances named are gone.
func deleteThenWait(ctx context.Context, a *app, kind string, ids []string, del func(*Client, context.Context, string) error,
	wait bool, insts []string, timeout time.Duration) error {
	if err := deleteEach(ctx, a, kind, ids, del); err != nil || !wait {
		return err
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	return waitGone(ctx, c, insts, timeout)
}
