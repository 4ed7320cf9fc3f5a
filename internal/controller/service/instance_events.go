package service

import (
	"context"
	"fmt"
	"strings"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/workload"
)

// note is an event to record: its reason and message.
type note struct{ reason, message string }

// instanceEvents says what happened to an instance whose record went from
// before to after (a status ingested): where it was scheduled, that its
// node restarted it, and its new status with the reason and message.
func instanceEvents(before, after workload.Instance) []note {
	var out []note
	if after.Node != "" && after.Node != before.Node {
		out = append(out, note{api.EventScheduled, "on " + after.Node})
	}
	if after.Restarts > before.Restarts && after.Reason != api.ReasonNodeLost {
		out = append(out, note{api.EventRestarting, fmt.Sprintf("restart %d: %s", after.Restarts, detail(after))})
	}
	if after.Ready != before.Ready {
		out = append(out, note{api.EventReady, fmt.Sprintf("ready: %t", after.Ready)})
	}
	sameExit := (after.ExitCode == nil) == (before.ExitCode == nil) && (after.ExitCode == nil || *after.ExitCode == *before.ExitCode)
	if after.Status == before.Status && after.Reason == before.Reason && after.Message == before.Message && sameExit {
		return out
	}
	switch after.Status {
	case workload.StatusPending:
		switch {
		case after.Reason == api.ReasonNodeLost:
			out = append(out, note{api.EventRescheduled, detail(after)})
		case after.Node == "":
			out = append(out, note{api.EventPending, detail(after)})
		case after.Node == before.Node: // not the "scheduled on" of Scheduled
			out = append(out, note{api.EventUpdated, detail(after)})
		}
	case workload.StatusCreating:
		out = append(out, note{api.EventCreating, detail(after)})
	case workload.StatusRunning:
		if before.Status != workload.StatusRunning {
			out = append(out, note{api.EventStarted, detail(after)})
		} else {
			out = append(out, note{api.EventUpdated, detail(after)})
		}
	case workload.StatusFailed:
		out = append(out, note{api.EventFailed, detail(after)})
	case workload.StatusTerminated:
		out = append(out, note{api.EventExited, detail(after)})
	case workload.StatusDestroying:
		out = append(out, note{api.EventStopping, detail(after)})
	default:
		out = append(out, note{api.EventUpdated, string(after.Status) + ": " + detail(after)})
	}
	return out
}

// detail is an instance's reason, message and exit code, as one line.
func detail(i workload.Instance) string {
	var parts []string
	for _, p := range []string{i.Reason, i.Message} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	if i.ExitCode != nil {
		parts = append(parts, fmt.Sprintf("exit code %d", *i.ExitCode))
	}
	return strings.Join(parts, ": ")
}

// recordInstance records what happened to instance name, whose record went
// from before to after.
func (s *Service) recordInstance(ctx context.Context, name string, before, after workload.Instance) {
	for _, n := range instanceEvents(before, after) {
		s.Record(ctx, api.EventKindInstance, name, n.reason, n.message)
	}
}
