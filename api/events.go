package api

// The event stream (GET /api/v0/events): server-sent events named by what
// changed, each with the store revision of the change as its id.
const (
	// EventInstance carries an instance item; a removed instance is sent
	// once more as TERMINATED.
	EventInstance = "instance"
	// EventWorkload carries a workload item.
	EventWorkload = "workload"
	// EventWorkloadDeleted carries the last known item of a removed
	// workload.
	EventWorkloadDeleted = "workload.deleted"
	// EventNode carries a node item (as the controller last stored it).
	EventNode = "node"
	// EventNodeDeleted carries the last known item of a removed node.
	EventNodeDeleted = "node.deleted"
	// EventSync ends a resync: its data (a Sync) names every object that
	// exists; a client forgets the others.
	EventSync = "sync"
)

// EventKinds are the kinds of objects the stream follows (its "kinds"
// query parameter).
var EventKinds = []string{EventInstance, EventWorkload, EventNode}

// Sync is the data of a sync event: the ids of the objects of each kind
// asked for that exist at its id.
type Sync struct {
	Instances []string `json:"instances,omitempty"`
	Workloads []string `json:"workloads,omitempty"`
	Nodes     []string `json:"nodes,omitempty"`
}
