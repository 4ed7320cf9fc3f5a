package api

// Reasons are the short, machine-friendly causes carried by instance
// statuses (InstanceMetric.reason on the wire, `reason` in the REST API).
// Every component uses these constants: a reason is matched by value (the
// controller reschedules on ReasonNodeLost), so it is spelled once.
const (
	// Set by the scheduler.
	ReasonNodeLost    = "node lost"          // the node stopped heartbeating (or is gone for good)
	ReasonNoNodeFits  = "no node fits"       // PENDING: placement found no node
	ReasonDestroyed   = "Destroyed"          // TERMINATED on request
	ReasonRejected    = "SchedulingRejected" // the scheduler refused the order
	ReasonUnknown     = "Unknown"            // a terminal status arrived without a reason
	ReasonDeleted     = "Deleted"            // the record was removed (events)
	ReasonBackOff     = "BackOff"            // CREATING: waiting to restart
	ReasonCompleted   = "Completed"          // exited with code 0
	ReasonError       = "Error"              // exited with another code, or broke
	ReasonOOMKilled   = "OOMKilled"          // killed for memory
	ReasonLost        = "Lost"               // not found on its node after a restart
	ReasonNotFound    = "NotFound"           // the runtime does not know it
	ReasonNoRuntime   = "NoRuntime"          // the node has no runtime for its kind
	ReasonLedgerError = "LedgerError"        // the node could not record it

	ReasonInvalidDefinition = "InvalidDefinition"
	ReasonInvalidSpec       = "InvalidSpec"
	ReasonInvalidInstanceID = "InvalidInstanceID"
	ReasonRestartFailed     = "RestartFailed"
	ReasonStartFailed       = "StartFailed"
	ReasonStartTimeout      = "StartTimeout"
	ReasonStartInterrupted  = "StartInterrupted"
	ReasonCleanupFailed     = "CleanupFailed"
	ReasonImagePullFailed   = "ImagePullFailed"
	ReasonInvalidImageName  = "InvalidImageName"
	ReasonRootfsFailed      = "RootfsFailed"
	ReasonNetworkFailed     = "NetworkFailed"
	ReasonVMMFailed         = "VMMFailed"
	ReasonBootFailed        = "BootFailed"
	ReasonVMCrashed         = "VMCrashed"
	ReasonPrivilegedRefused = "PrivilegedNotAllowed"
	// ReasonLivenessProbeFailed: the instance was stopped because a
	// liveness probe failed (the message says which and why); it is
	// restarted under its restart policy (Never: it ends FAILED).
	ReasonLivenessProbeFailed = "LivenessProbeFailed"
)
