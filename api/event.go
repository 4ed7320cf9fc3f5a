package api

import "time"

// The objects events are about (events.list?kind=).
const (
	EventKindWorkload = "workload"
	EventKindInstance = "instance"
	EventKindNode     = "node"
)

// MaxEvents is how many events are kept per object (the oldest go).
const MaxEvents = 100

// Event reasons the controller records. Other code may record its own
// (rollouts: "RolloutProgress", ...).
const (
	EventCreated     = "Created"     // a workload was created
	EventDeleting    = "Deleting"    // its deletion was asked for
	EventScheduled   = "Scheduled"   // placed on a node
	EventPending     = "Pending"     // waiting for a node that fits
	EventCreating    = "Creating"    // being set up: pulling, fetching rootfs, ...
	EventStarted     = "Started"     // RUNNING
	EventReady       = "Ready"       // its readiness changed
	EventRestarting  = "Restarting"  // restarted by its node (restart count grew)
	EventFailed      = "Failed"      // FAILED, with the reason
	EventExited      = "Exited"      // TERMINATED, with its exit code
	EventStopping    = "Stopping"    // DESTROYING
	EventRescheduled = "Rescheduled" // its node was lost: placed again
	EventUpdated     = "Updated"     // a new message while in the same status
	EventRegistered  = "Registered"  // a node registered
	EventNodeReady   = "NodeReady"   // a node is Ready again
	EventNodeLost    = "NodeLost"    // a node missed its heartbeats
)

// Event is one thing that happened to a workload, an instance or a node.
// events.list returns them oldest first.
type Event struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	Name    string    `json:"name"`
	Reason  string    `json:"reason"`
	Message string    `json:"message,omitempty"`
	// Count > 1: the same event happened that many times in a row; Time
	// is the last.
	Count int `json:"count,omitempty"`
}
