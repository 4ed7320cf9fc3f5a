// Package runtime declares what the riklet agent needs from a workload
// runtime (one per kind: pod, function). Implementations live in
// runtime/pod and runtime/function; the agent owns restart policy, the
// ledger and reporting.
package runtime

import (
	"context"
	"errors"
	"io"

	"github.com/rik-org/rik/internal/workload"
)

// ErrNotFound: the runtime has no such instance.
var ErrNotFound = errors.New("instance not found")

// Instance is what the agent asks a runtime to run.
type Instance struct {
	ID         string            // instance id (unique, stable; used to name resources)
	Name       string            // instance name, for humans
	WorkloadID string            //
	Workload   workload.Workload // parsed, defaulted, validated definition
}

// Phase of an instance as a runtime sees it.
type Phase string

const (
	PhaseCreating Phase = "CREATING"
	PhaseRunning  Phase = "RUNNING"
	PhaseExited   Phase = "EXITED" // the process (any container, or the VM) ended; see ExitCode
	PhaseFailed   Phase = "FAILED" // could not be started or broke; see Reason
)

// Status is a runtime's view of one instance.
type Status struct {
	InstanceID string
	Phase      Phase
	IP         string
	Ports      []workload.PortMapping
	ExitCode   *int
	Reason     string           // short cause, one of the api.Reason constants
	Message    string           // detail or progress ("pulling alpine: 3/5 layers")
	Timings    map[string]int64 // phase -> milliseconds since start was asked
}

// Reporter receives every status change a runtime sees on its own: progress
// while starting, and exits after it started. It must not block for long.
//
// The riklet agent forwards PhaseCreating progress (Message) while the
// instance is being created, and applies the restart policy on PhaseExited
// and PhaseFailed of a running instance; it ignores exits reported for an
// earlier run (one it since stopped or restarted), but a runtime should not
// report exits caused by Stop. The agent never calls the runtime from the
// Reporter, so a runtime may call it while holding its own locks.
type Reporter func(Status)

// LogOptions select what Logs returns.
type LogOptions struct {
	Container string // pods: the container (default: the first one)
	Follow    bool   // keep streaming until ctx is done or the instance ends
	Tail      int    // last N lines; 0: all
}

// Runtime runs the instances of one workload kind on this node. Constructors
// take a Reporter for the changes the runtime sees on its own (exits).
type Runtime interface {
	// Kind is the workload kind this runtime runs.
	Kind() workload.Kind
	// Start creates and starts the instance and returns once it runs (or
	// failed). It is idempotent: starting an instance that already runs
	// returns its status. On error, everything Start created is rolled back.
	Start(ctx context.Context, inst Instance) (Status, error)
	// Stop stops the instance (graceful, then forced) and removes every
	// resource it holds. Stopping an unknown instance is not an error.
	Stop(ctx context.Context, inst Instance) error
	// Recover is called once at riklet start with the instances the ledger
	// says this node owns. It adopts those still running (returning their
	// status; owned instances not running come back with PhaseExited or
	// PhaseFailed) and removes every resource owned by no instance in owned.
	Recover(ctx context.Context, owned []Instance) ([]Status, error)
	// Logs writes the instance's logs to w.
	Logs(ctx context.Context, inst Instance, opts LogOptions, w io.Writer) error
}
