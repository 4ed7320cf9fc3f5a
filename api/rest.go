package api

import "time"

// The REST API's wire types (described in openapi.yaml), shared by the
// controller that serves them and rikctl that reads them. Workloads and
// instances are api.Item[workload.Workload] and api.Item[workload.Instance]
// (internal/workload owns those values).

// Item is RIK's shape of every object the REST API answers with or lists,
// and of the records in the store: {id, name, value}.
type Item[T any] struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Value T      `json:"value"`
}

// Error is the body of every error answer.
type Error struct {
	Error string `json:"error"`
}

// IDRequest is the body of workloads.delete, instances.delete and
// tokens.delete: an id or a name.
type IDRequest struct {
	ID string `json:"id"`
}

// CreateInstancesRequest is the body of instances.create.
type CreateInstancesRequest struct {
	WorkloadID string  `json:"workload_id"`        // id or name
	Name       *string `json:"name,omitempty"`     // default: <workload>-<random>
	Replicas   *int    `json:"replicas,omitempty"` // default 1
}

// Node is the value of a nodes.list item: cpu in millicores, memory and
// disk in MiB.
type Node struct {
	Name      string            `json:"name"`
	Status    string            `json:"status"`
	Capacity  Resources         `json:"capacity"`
	Usage     Resources         `json:"usage"`
	Allocated Allocation        `json:"allocated"`
	Kinds     []string          `json:"kinds"`
	Labels    map[string]string `json:"labels"`
	Address   string            `json:"address"`
	PodSubnet string            `json:"podSubnet,omitempty"` // the node's pod subnet, once allocated
	Instances int32             `json:"instances"`
	Load1     float64           `json:"load1"`
	// LastHeartbeat is RFC 3339; empty before the first one.
	LastHeartbeat string `json:"lastHeartbeat"`
	// Stale marks a stored record served while the scheduler is
	// unreachable (its status is then NodeStatusUnknown).
	Stale bool `json:"stale,omitempty"`
}

// NodeStatusUnknown is the status of a stored node served while the
// scheduler is unreachable.
const NodeStatusUnknown = "Unknown"

// Resources in API units: cpu millicores, memory and disk MiB.
type Resources struct {
	CPU    int64 `json:"cpu"`
	Memory int64 `json:"memory"`
	Disk   int64 `json:"disk"`
}

// Allocation is what the instances placed on a node asked for.
type Allocation struct {
	CPU    int64 `json:"cpu"`
	Memory int64 `json:"memory"`
}

// Token is the value of a tokens.list item: never its secret.
type Token struct {
	Role        string     `json:"role"` // admin, operator or viewer
	Description string     `json:"description,omitempty"`
	CreatedAt   time.Time  `json:"createdAt"`
	ExpiresAt   *time.Time `json:"expiresAt,omitempty"`
	Expired     bool       `json:"expired,omitempty"`
}

// CreateTokenRequest is the body of tokens.create.
type CreateTokenRequest struct {
	Role        string `json:"role"`
	Description string `json:"description,omitempty"`
	// TTL is a duration such as "24h" or "90m"; empty or "0": no expiry.
	TTL string `json:"ttl,omitempty"`
}

// CreatedToken is the answer of tokens.create: the item and, this once,
// the bearer token itself.
type CreatedToken struct {
	Item[Token]
	Token string `json:"token"`
}

// Health is the answer of /healthz (Leader and Version set) and /readyz
// (Reason set when not ready).
type Health struct {
	Status    string `json:"status"`    // ok; ready or not ready
	Scheduler string `json:"scheduler"` // connected or disconnected
	// Leader says whether this controller holds the ingestion lease
	// (/healthz only).
	Leader *bool `json:"leader,omitempty"`
	// Reason says why the controller is not ready: its store or its
	// scheduler link (/readyz only).
	Reason string `json:"reason,omitempty"`
	// Version is the controller's build (/healthz only), shown by
	// `rikctl version`.
	Version   string `json:"version,omitempty"`
	GoVersion string `json:"goVersion,omitempty"`
}

// Rollout phases of a managed workload (Rollout.Phase).
const (
	RolloutProgressing = "Progressing" // instances are being created, replaced or removed
	RolloutComplete    = "Complete"    // replicas instances of the current revision, all available
	RolloutFailed      = "Failed"      // stopped: no progress within progressDeadlineSeconds
)

// ReasonProgressDeadline is the reason of a rollout stopped at its
// progress deadline.
const ReasonProgressDeadline = "ProgressDeadlineExceeded"

// Rollout is the state of a managed workload (workloads.rollout,
// workloads.rollouts, workloads.scale): counts of its live instances and
// where its rollout stands.
type Rollout struct {
	Workload string `json:"workload"`
	ID       string `json:"id"`
	Revision int    `json:"revision"` // the current one
	Replicas int    `json:"replicas"`
	// Instances counts the live instances (not being deleted, not ended),
	// of every revision; Ready those ready; UpToDate the live ones of the
	// current revision; Available those of the current revision ready for
	// minReadySeconds.
	Instances int    `json:"instances"`
	Ready     int    `json:"ready"`
	UpToDate  int    `json:"upToDate"`
	Available int    `json:"available"`
	Phase     string `json:"phase"`
	Reason    string `json:"reason,omitempty"`
	Message   string `json:"message,omitempty"`
	// StartedAt is when the rollout of the current revision started;
	// ProgressAt when it last made progress (a new instance available).
	StartedAt  time.Time `json:"startedAt"`
	ProgressAt time.Time `json:"progressAt"`
}

// Done reports whether the rollout ended, and whether it succeeded.
func (r Rollout) Done() (done, ok bool) {
	switch r.Phase {
	case RolloutComplete:
		return true, true
	case RolloutFailed:
		return true, false
	}
	return false, false
}

// Revision is one numbered definition of a managed workload
// (workloads.history); T is the definition type.
type Revision[T any] struct {
	Revision  int       `json:"revision"`
	CreatedAt time.Time `json:"createdAt"`
	// Cause says what made it: apply, or undo to revision N.
	Cause      string `json:"cause,omitempty"`
	Current    bool   `json:"current,omitempty"`
	Definition T      `json:"definition"`
}

// Applied is the answer of workloads.apply and workloads.undo: the stored
// workload, its current revision and whether this call made it (a
// definition identical to the current one makes none).
type Applied[T any] struct {
	Workload Item[T] `json:"workload"`
	Revision int     `json:"revision"`
	Created  bool    `json:"created"` // the workload did not exist
	Changed  bool    `json:"changed"` // a new revision was made
}

// ScaleRequest is the body of workloads.scale.
type ScaleRequest struct {
	ID       string `json:"id"` // id or name
	Replicas *int   `json:"replicas"`
}

// UndoRequest is the body of workloads.undo: back to Revision, or to the
// one before the current when 0.
type UndoRequest struct {
	ID       string `json:"id"` // id or name
	Revision int    `json:"revision,omitempty"`
}
