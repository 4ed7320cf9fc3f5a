// Package workload owns the workload definition (v1): its types, defaults and
// validation, and the instance record the controller stores. It does no I/O.
package workload

import "time"

// Kind is the kind of a workload, normalised: "pod" or "function".
type Kind string

const (
	KindPod      Kind = "pod"
	KindFunction Kind = "function"
)

// RestartPolicy says what a node does when an instance's process exits.
type RestartPolicy string

const (
	RestartNever     RestartPolicy = "Never"
	RestartOnFailure RestartPolicy = "OnFailure"
	RestartAlways    RestartPolicy = "Always"
)

// Workload is a workload definition. JSON field names follow RIK
// (api_version, kind, name, replicas, spec); apiVersion is accepted too.
type Workload struct {
	APIVersion string `json:"api_version,omitempty"`
	Kind       Kind   `json:"kind"`
	Name       string `json:"name"`
	// Replicas defaults to 1 when absent from the JSON (0 is valid: defined,
	// not run), so it is always written out.
	Replicas      int           `json:"replicas"`
	RestartPolicy RestartPolicy `json:"restartPolicy,omitempty"`
	Spec          Spec          `json:"spec"`
	// Update says how a managed workload (one applied with workloads.apply)
	// replaces instances of an older revision. Ignored for unmanaged ones.
	Update *Update `json:"update,omitempty"`
}

// Update is the rolling update policy of a managed workload, as Kubernetes'
// RollingUpdate and Nomad's update stanza.
type Update struct {
	// MaxSurge is how many instances above replicas may run during a
	// rollout (default 1).
	MaxSurge *int `json:"maxSurge,omitempty"`
	// MaxUnavailable is how many below replicas may be unready during a
	// rollout (default 0).
	MaxUnavailable *int `json:"maxUnavailable,omitempty"`
	// MinReadySeconds is how long a new instance must stay ready before it
	// counts as available.
	MinReadySeconds int `json:"minReadySeconds,omitempty"`
	// ProgressDeadlineSeconds: a rollout whose new instances are not ready
	// by then stops and says why (default 600).
	ProgressDeadlineSeconds int `json:"progressDeadlineSeconds,omitempty"`
}

// Healthcheck holds the probes the riklet runs against one container or
// Function: readiness gates rollouts and the READY count, liveness restarts
// the instance under its restart policy.
type Healthcheck struct {
	Readiness *Probe `json:"readiness,omitempty"`
	Liveness  *Probe `json:"liveness,omitempty"`
}

// Probe is one health check: exactly one of HTTP, TCP or Exec (pods only).
type Probe struct {
	HTTP *HTTPProbe `json:"http,omitempty"`
	TCP  *TCPProbe  `json:"tcp,omitempty"`
	Exec *ExecProbe `json:"exec,omitempty"`
	// IntervalSeconds between checks (default 10).
	IntervalSeconds int `json:"intervalSeconds,omitempty"`
	// TimeoutSeconds of one check (default 1).
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
	// FailureThreshold: consecutive failures before the probe fails (default 3).
	FailureThreshold int `json:"failureThreshold,omitempty"`
	// InitialDelaySeconds after start before the first check.
	InitialDelaySeconds int `json:"initialDelaySeconds,omitempty"`
}

// HTTPProbe succeeds on a 2xx or 3xx answer to GET path on port.
type HTTPProbe struct {
	Path string `json:"path,omitempty"` // default /
	Port int    `json:"port"`
}

// TCPProbe succeeds when a connection to port opens.
type TCPProbe struct {
	Port int `json:"port"`
}

// ExecProbe succeeds when command exits 0 inside the container.
type ExecProbe struct {
	Command []string `json:"command"`
}

// Spec holds what runs: containers for a Pod, a function for a Function.
type Spec struct {
	Containers []Container `json:"containers,omitempty"`
	Function   *Function   `json:"function,omitempty"`
}

// Container is one OCI container of a Pod.
type Container struct {
	Name      string     `json:"name"`
	Image     string     `json:"image"`
	Command   []string   `json:"command,omitempty"`
	Args      []string   `json:"args,omitempty"`
	Env       []EnvVar   `json:"env,omitempty"`
	Ports     PortList   `json:"ports,omitempty"`
	Resources *Resources `json:"resources,omitempty"`

	SecurityContext *SecurityContext `json:"securityContext,omitempty"` // see security.go
	Healthcheck     *Healthcheck     `json:"healthcheck,omitempty"`
}

// EnvVar is one environment variable.
type EnvVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Port exposes TargetPort of a pod or guest on the node's Port.
// Port 0 means "not exposed on the node".
type Port struct {
	Port       int    `json:"port,omitempty"`
	TargetPort int    `json:"targetPort,omitempty"`
	Protocol   string `json:"protocol,omitempty"` // TCP (default) or UDP
}

// PortList is a list of ports; a single object is accepted too (RIK examples).
type PortList []Port

// Resources asked for by a container or function.
type Resources struct {
	CPU    int `json:"cpu,omitempty"`    // millicores
	Memory int `json:"memory,omitempty"` // MiB
}

// Function is a microVM booted from a root filesystem.
type Function struct {
	Execution Execution `json:"execution"`
	Exposure  PortList  `json:"exposure,omitempty"`
	// Healthcheck probes reach the guest at its address (http and tcp only).
	Healthcheck *Healthcheck `json:"healthcheck,omitempty"`
	// Network is how the guest is attached: NetworkNAT (a /30 of its own,
	// reached through its host ports) or NetworkBridge (on the pod network,
	// at a pod address handed out by DHCP). "" = the node's default.
	Network string `json:"network,omitempty"`
}

// Function network modes (Function.Network).
const (
	NetworkNAT    = "nat"
	NetworkBridge = "bridge"
)

// Execution says how a Function's VM boots.
type Execution struct {
	Rootfs     string `json:"rootfs"`
	SHA256     string `json:"sha256,omitempty"`
	VCPUs      int    `json:"vcpus,omitempty"`
	Memory     int    `json:"memory,omitempty"` // MiB
	KernelArgs string `json:"kernelArgs,omitempty"`
	Entrypoint string `json:"entrypoint,omitempty"` // default /sbin/init
	// Args and Env are passed by rik-init to the entrypoint.
	Args []string `json:"args,omitempty"`
	Env  []EnvVar `json:"env,omitempty"`
}

// Status of an instance, as stored and shown. Names match common.ResourceStatus.
type Status string

const (
	StatusUnknown    Status = "UNKNOWN"
	StatusPending    Status = "PENDING"
	StatusRunning    Status = "RUNNING"
	StatusFailed     Status = "FAILED"
	StatusTerminated Status = "TERMINATED"
	StatusCreating   Status = "CREATING"
	StatusDestroying Status = "DESTROYING"
)

// PortMapping is a host port forwarded to an instance.
type PortMapping struct {
	Port       int    `json:"port"`
	TargetPort int    `json:"targetPort"`
	Protocol   string `json:"protocol,omitempty"`
}

// Instance is the value of an instance record: one running copy of a workload.
type Instance struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	WorkloadID   string `json:"workload_id"`
	WorkloadName string `json:"workload_name,omitempty"`
	Kind         Kind   `json:"kind"`
	Status       Status `json:"status"`
	Node         string `json:"node,omitempty"`
	// FormerNodes are nodes it ran on before (it moved, or was rescheduled
	// after a node loss): a copy may still run there until each confirms.
	FormerNodes []string         `json:"formerNodes,omitempty"`
	IP          string           `json:"ip,omitempty"`
	Ports       []PortMapping    `json:"ports,omitempty"`
	Reason      string           `json:"reason,omitempty"`
	Message     string           `json:"message,omitempty"`
	ExitCode    *int             `json:"exitCode,omitempty"`
	Restarts    int              `json:"restarts"`
	Timings     map[string]int64 `json:"timings_ms,omitempty"`
	// Ready is true while the instance runs and its readiness probes (if
	// any) pass; an instance with none is ready once RUNNING.
	Ready bool `json:"ready"`
	// Revision of its workload's definition it runs (managed workloads).
	Revision  int       `json:"revision,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	// DeleteRequested is set when a user deleted the instance; the record
	// goes away once the node reports it TERMINATED.
	DeleteRequested bool `json:"deleteRequested,omitempty"`
}

// Terminal reports whether s is an end state.
func (s Status) Terminal() bool { return s == StatusFailed || s == StatusTerminated }
