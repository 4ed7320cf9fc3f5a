package workload

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalid is wrapped by every error saying a definition (or a name, or a
// kind) is not acceptable. The edges map it to HTTP 400 / InvalidArgument.
var ErrInvalid = errors.New("invalid workload")

// Limits that keep a definition small; they stop abuse, not real use.
const (
	MaxDefinitionBytes = 1 << 20 // what Parse accepts
	MaxNameLen         = 63      // a DNS label
	// MaxWorkloadNameLen leaves room for the "-xxxxx" suffix of generated
	// instance names, which must be DNS labels too.
	MaxWorkloadNameLen = MaxNameLen - 6
	MaxContainers      = 16
	MaxPorts           = 64   // per container, and for a function's exposure
	MaxEnv             = 256  // per container
	MaxArgs            = 256  // command + args, per container
	MaxArgLen          = 4096 // one command or args element, one env value
	MaxImageLen        = 512
	MaxURLLen          = 2048
	MaxKernelArgsLen   = 1024
	MaxPathLen         = 256
	MaxReplicas        = 1000
	MaxCPUMillis       = 1_000_000
	MaxMemoryMiB       = 16 << 20 // 16 TiB
	MaxVCPUs           = 32
	MinFunctionMiB     = 16
	MaxFunctionMiB     = 65536
)

// FieldError is one problem, at a field path like spec.containers[0].image.
type FieldError struct {
	Field string
	Msg   string
}

func (e FieldError) String() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

// ValidationError lists every problem found in a definition. It wraps
// ErrInvalid.
type ValidationError struct {
	Errors []FieldError
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Errors))
	for i, fe := range e.Errors {
		parts[i] = fe.String()
	}
	return strings.Join(parts, "; ")
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

func invalid(field, msg string) *ValidationError {
	return &ValidationError{Errors: []FieldError{{Field: field, Msg: msg}}}
}

// ParseKind normalises a kind as users and RIK spell it: "pod", "pods",
// "Pod", "function", "functions", "Function" (any case).
func ParseKind(s string) (Kind, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "pod", "pods":
		return KindPod, nil
	case "function", "functions":
		return KindFunction, nil
	}
	return "", invalid("kind", fmt.Sprintf("must be pod or function, got %q", truncate(s)))
}

// KeySegment is the kind as it appears in store keys: "pods" or "function"
// (RIK's layout). Unknown kinds give "".
func (k Kind) KeySegment() string {
	switch k {
	case KindPod:
		return "pods"
	case KindFunction:
		return "function"
	}
	return ""
}

const dnsLabelMsg = "must be a DNS label (lowercase a-z0-9 and '-', at most 63 chars)"

// ValidName checks that s is a DNS label (RFC 1123): 1-63 chars of a-z, 0-9
// and '-', starting and ending with a letter or digit. The error is a
// *ValidationError on field "name".
func ValidName(s string) error {
	if !isDNSLabel(s) {
		return invalid("name", dnsLabelMsg)
	}
	return nil
}

func isDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

// Validate checks a defaulted definition and returns a *ValidationError
// listing every problem, or nil.
func Validate(w Workload) error {
	v := &validator{}
	v.workload(w)
	if len(v.errs) == 0 {
		return nil
	}
	return &ValidationError{Errors: v.errs}
}

type validator struct {
	errs []FieldError
}

func (v *validator) add(field, format string, args ...any) {
	v.errs = append(v.errs, FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) workload(w Workload) {
	switch w.APIVersion {
	case "v0", "v1":
	case "":
		v.add("apiVersion", "required")
	default:
		v.add("apiVersion", "must be v1 (or RIK's v0), got %q", truncate(w.APIVersion))
	}
	switch {
	case !isDNSLabel(w.Name):
		v.add("name", dnsLabelMsg)
	case len(w.Name) > MaxWorkloadNameLen:
		v.add("name", "at most %d chars (instance names add a 6-char suffix)", MaxWorkloadNameLen)
	}
	if w.Replicas < 0 || w.Replicas > MaxReplicas {
		v.add("replicas", "must be between 0 and %d", MaxReplicas)
	}
	switch w.RestartPolicy {
	case RestartNever, RestartOnFailure, RestartAlways:
	default:
		v.add("restartPolicy", "must be Never, OnFailure or Always, got %q", truncate(string(w.RestartPolicy)))
	}
	switch w.Kind {
	case KindPod:
		v.pod(w.Spec)
	case KindFunction:
		v.function(w.Spec)
	case "":
		v.add("kind", "required (pod or function)")
	default:
		v.add("kind", "must be pod or function, got %q", truncate(string(w.Kind)))
	}
	v.hostPorts(w)
	v.update(w.Update)
	v.healthchecks(w)
}

func (v *validator) pod(s Spec) {
	if s.Function != nil {
		v.add("spec.function", "not allowed for a pod")
	}
	switch n := len(s.Containers); {
	case n == 0:
		v.add("spec.containers", "at least one container required")
		return
	case n > MaxContainers:
		v.add("spec.containers", "at most %d containers", MaxContainers)
		return
	}
	seen := make(map[string]bool)
	for i, c := range s.Containers {
		p := fmt.Sprintf("spec.containers[%d]", i)
		switch {
		case !isDNSLabel(c.Name):
			v.add(p+".name", dnsLabelMsg)
		case seen[c.Name]:
			v.add(p+".name", "duplicate container name %q", c.Name)
		}
		seen[c.Name] = true
		switch {
		case c.Image == "":
			v.add(p+".image", "required")
		case len(c.Image) > MaxImageLen:
			v.add(p+".image", "at most %d chars", MaxImageLen)
		case strings.ContainsFunc(c.Image, isSpaceOrControl):
			v.add(p+".image", "must not contain spaces or control characters")
		}
		if len(c.Command)+len(c.Args) > MaxArgs {
			v.add(p, "command and args: at most %d elements together", MaxArgs)
		} else {
			v.strings(p+".command", c.Command)
			v.strings(p+".args", c.Args)
		}
		v.env(p+".env", c.Env)
		v.ports(p+".ports", c.Ports)
		if r := c.Resources; r != nil {
			if r.CPU < 0 || r.CPU > MaxCPUMillis {
				v.add(p+".resources.cpu", "must be between 0 and %d millicores", MaxCPUMillis)
			}
			if r.Memory < 0 || r.Memory > MaxMemoryMiB {
				v.add(p+".resources.memory", "must be between 0 and %d MiB", MaxMemoryMiB)
			}
		}
		v.securityContext(p+".securityContext", c.SecurityContext)
	}
}

func (v *validator) strings(path string, ss []string) {
	for i, s := range ss {
		switch {
		case len(s) > MaxArgLen:
			v.add(fmt.Sprintf("%s[%d]", path, i), "at most %d chars", MaxArgLen)
		case strings.ContainsRune(s, 0):
			v.add(fmt.Sprintf("%s[%d]", path, i), "must not contain NUL")
		}
	}
}

func (v *validator) env(path string, env []EnvVar) {
	if len(env) > MaxEnv {
		v.add(path, "at most %d variables", MaxEnv)
		return
	}
	for i, e := range env {
		p := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case e.Name == "":
			v.add(p+".name", "required")
		case len(e.Name) > MaxPathLen:
			v.add(p+".name", "at most %d chars", MaxPathLen)
		case strings.ContainsAny(e.Name, "=\x00"):
			v.add(p+".name", "must not contain '=' or NUL")
		}
		switch {
		case len(e.Value) > MaxArgLen:
			v.add(p+".value", "at most %d chars", MaxArgLen)
		case strings.ContainsRune(e.Value, 0):
			v.add(p+".value", "must not contain NUL")
		}
	}
}

func (v *validator) ports(path string, ports PortList) {
	if len(ports) > MaxPorts {
		v.add(path, "at most %d ports", MaxPorts)
		return
	}
	for i, pt := range ports {
		p := fmt.Sprintf("%s[%d]", path, i)
		if pt.Port < 0 || pt.Port > 65535 {
			v.add(p+".port", "must be between 1 and 65535 (0: not exposed on the node)")
		}
		if pt.TargetPort < 1 || pt.TargetPort > 65535 {
			v.add(p+".targetPort", "must be between 1 and 65535")
		}
		if pt.Protocol != "TCP" && pt.Protocol != "UDP" {
			v.add(p+".protocol", "must be TCP or UDP, got %q", truncate(pt.Protocol))
		}
	}
}

func (v *validator) function(s Spec) {
	if len(s.Containers) > 0 {
		v.add("spec.containers", "not allowed for a function")
	}
	f := s.Function
	if f == nil {
		v.add("spec.function.execution.rootfs", "required")
		return
	}
	e := f.Execution
	const p = "spec.function.execution"
	switch {
	case e.Rootfs == "":
		v.add(p+".rootfs", "required")
	case len(e.Rootfs) > MaxURLLen:
		v.add(p+".rootfs", "at most %d chars", MaxURLLen)
	case !validRootfsURL(e.Rootfs):
		v.add(p+".rootfs", "must be an http://, https:// or file:// URL without spaces")
	}
	if e.SHA256 != "" && !isHex64(e.SHA256) {
		v.add(p+".sha256", "must be 64 hex digits")
	}
	if e.VCPUs < 1 || e.VCPUs > MaxVCPUs {
		v.add(p+".vcpus", "must be between 1 and %d", MaxVCPUs)
	}
	if e.Memory < MinFunctionMiB || e.Memory > MaxFunctionMiB {
		v.add(p+".memory", "must be between %d and %d MiB", MinFunctionMiB, MaxFunctionMiB)
	}
	switch {
	case len(e.KernelArgs) > MaxKernelArgsLen:
		v.add(p+".kernelArgs", "at most %d chars", MaxKernelArgsLen)
	case strings.ContainsFunc(e.KernelArgs, isControl):
		v.add(p+".kernelArgs", "must not contain control characters")
	default:
		if arg, ok := ReservedKernelArg(e.KernelArgs); ok {
			v.add(p+".kernelArgs", "%q is reserved (rik sets it)", truncate(arg))
		}
	}
	v.execArgs(p, e)
	v.ports("spec.function.exposure", f.Exposure)
	switch f.Network {
	case "", NetworkNAT, NetworkBridge:
	default:
		v.add("spec.function.network", "must be %s or %s, got %q", NetworkNAT, NetworkBridge, truncate(f.Network))
	}
}

// MaxExecBytes bounds a function's args and env together (what rik-init
// hands its entrypoint).
const MaxExecBytes = 64 << 10

// execArgs checks a function's entrypoint (an absolute path, then
// arguments separated by spaces), args and env; p is the execution's path.
func (v *validator) execArgs(p string, e Execution) {
	words := strings.Fields(e.Entrypoint)
	switch {
	case e.Entrypoint == "":
	case len(e.Entrypoint) > MaxArgLen:
		v.add(p+".entrypoint", "at most %d chars", MaxArgLen)
	case strings.ContainsFunc(e.Entrypoint, isControl):
		v.add(p+".entrypoint", "must not contain control characters")
	case len(words) == 0 || !strings.HasPrefix(words[0], "/") || len(words[0]) > MaxPathLen:
		v.add(p+".entrypoint", "must start with an absolute path (at most %d chars), then arguments separated by spaces", MaxPathLen)
	}
	if len(words) > 0 && len(words)-1+len(e.Args) > MaxArgs {
		v.add(p+".args", "at most %d elements (with the entrypoint's arguments)", MaxArgs)
		return
	}
	v.strings(p+".args", e.Args)
	v.env(p+".env", e.Env)
	size := 0
	for _, a := range e.Args {
		size += len(a) + 1
	}
	for _, ev := range e.Env {
		size += len(ev.Name) + len(ev.Value) + 2
	}
	if size > MaxExecBytes {
		v.add(p, "args and env: at most %d bytes together", MaxExecBytes)
	}
}

// hostPorts reports a host port (and protocol) used twice in the workload.
func (v *validator) hostPorts(w Workload) {
	type key struct {
		port  int
		proto string
	}
	seen := make(map[key]bool)
	check := func(path string, ports PortList) {
		if len(ports) > MaxPorts {
			return // reported already
		}
		for i, p := range ports {
			if p.Port <= 0 {
				continue
			}
			k := key{p.Port, p.Protocol}
			if seen[k] {
				v.add(fmt.Sprintf("%s[%d].port", path, i), "host port %d/%s used twice", p.Port, p.Protocol)
			}
			seen[k] = true
		}
	}
	if len(w.Spec.Containers) <= MaxContainers {
		for i, c := range w.Spec.Containers {
			check(fmt.Sprintf("spec.containers[%d].ports", i), c.Ports)
		}
	}
	if w.Spec.Function != nil {
		check("spec.function.exposure", w.Spec.Function.Exposure)
	}
}

func validRootfsURL(s string) bool {
	if strings.ContainsFunc(s, isSpaceOrControl) {
		return false
	}
	for _, scheme := range []string{"http://", "https://", "file://"} {
		if len(s) > len(scheme) && strings.EqualFold(s[:len(scheme)], scheme) {
			return true
		}
	}
	return false
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func isSpaceOrControl(r rune) bool {
	return isControl(r) || r == ' ' || r == '\u00a0' || r == '\u2028' || r == '\u2029'
}

// truncate keeps user input quoted in messages short.
func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// MaxInstanceIDLen bounds instance ids (UUIDs, 36 characters, on the wire).
const MaxInstanceIDLen = 64

// ValidInstanceID checks an instance id as every component accepts it:
// 1 to MaxInstanceIDLen letters, digits, '-' and '_', not starting with
// '-' or '_'. Nodes name files, devices, cgroups and rules after it. The
// error is a *ValidationError on field "instance_id".
func ValidInstanceID(id string) error {
	if id == "" {
		return invalid("instance_id", "required")
	}
	if len(id) > MaxInstanceIDLen {
		return invalid("instance_id", fmt.Sprintf("at most %d characters", MaxInstanceIDLen))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || (i > 0 && (c == '-' || c == '_'))
		if !ok {
			return invalid("instance_id", fmt.Sprintf("invalid character at %d (want letters, digits, '-', '_')", i))
		}
	}
	return nil
}

// MaxProbeSeconds bounds every duration of a probe and of an update.
const MaxProbeSeconds = 86400

// update checks a rolling update policy: no negative field, and one that
// can progress (maxSurge and maxUnavailable not both 0).
func (v *validator) update(u *Update) {
	if u == nil {
		return
	}
	if u.MaxSurge != nil && (*u.MaxSurge < 0 || *u.MaxSurge > MaxReplicas) {
		v.add("update.maxSurge", "must be between 0 and %d", MaxReplicas)
	}
	if u.MaxUnavailable != nil && (*u.MaxUnavailable < 0 || *u.MaxUnavailable > MaxReplicas) {
		v.add("update.maxUnavailable", "must be between 0 and %d", MaxReplicas)
	}
	if u.Surge() == 0 && u.Unavailable() == 0 {
		v.add("update", "maxSurge and maxUnavailable cannot both be 0: the rollout could never progress")
	}
	if u.MinReadySeconds < 0 || u.MinReadySeconds > MaxProbeSeconds {
		v.add("update.minReadySeconds", "must be between 0 and %d", MaxProbeSeconds)
	}
	if u.ProgressDeadlineSeconds < 0 || u.ProgressDeadlineSeconds > MaxProbeSeconds {
		v.add("update.progressDeadlineSeconds", "must be between 0 (default %d) and %d", DefaultProgressDeadlineSeconds, MaxProbeSeconds)
	}
}

// healthchecks checks the probes of every container and of the function.
// A probe's port must be one the container (or guest) listens on as
// declared: the targetPort of one of its ports (the riklet probes the
// instance's own address, not the node's host port).
func (v *validator) healthchecks(w Workload) {
	if len(w.Spec.Containers) <= MaxContainers {
		for i, c := range w.Spec.Containers {
			v.healthcheck(fmt.Sprintf("spec.containers[%d]", i), c.Healthcheck, c.Ports, true)
		}
	}
	if f := w.Spec.Function; f != nil {
		v.healthcheck("spec.function", f.Healthcheck, f.Exposure, false)
	}
}

func (v *validator) healthcheck(path string, h *Healthcheck, ports PortList, execOK bool) {
	if h == nil {
		return
	}
	path += ".healthcheck"
	v.probe(path+".readiness", h.Readiness, ports, execOK)
	v.probe(path+".liveness", h.Liveness, ports, execOK)
}

func (v *validator) probe(path string, p *Probe, ports PortList, execOK bool) {
	if p == nil {
		return
	}
	n := 0
	if p.HTTP != nil {
		n++
		if p.HTTP.Path != "" && (!strings.HasPrefix(p.HTTP.Path, "/") || len(p.HTTP.Path) > MaxPathLen ||
			strings.ContainsFunc(p.HTTP.Path, isSpaceOrControl)) {
			v.add(path+".http.path", "must be an absolute path without spaces (at most %d chars)", MaxPathLen)
		}
		v.probePort(path+".http.port", p.HTTP.Port, ports)
	}
	if p.TCP != nil {
		n++
		v.probePort(path+".tcp.port", p.TCP.Port, ports)
	}
	if p.Exec != nil {
		n++
		switch {
		case !execOK:
			v.add(path+".exec", "exec probes are for pods: a Function is probed over http or tcp at its guest address")
		case len(p.Exec.Command) == 0:
			v.add(path+".exec.command", "required")
		case len(p.Exec.Command) > MaxArgs:
			v.add(path+".exec.command", "at most %d elements", MaxArgs)
		default:
			v.strings(path+".exec.command", p.Exec.Command)
		}
	}
	if n != 1 {
		v.add(path, "exactly one of http, tcp or exec required, got %d", n)
	}
	for _, f := range []struct {
		name string
		val  int
	}{{"intervalSeconds", p.IntervalSeconds}, {"timeoutSeconds", p.TimeoutSeconds},
		{"failureThreshold", p.FailureThreshold}, {"initialDelaySeconds", p.InitialDelaySeconds}} {
		if f.val < 0 || f.val > MaxProbeSeconds {
			v.add(path+"."+f.name, "must be between 0 and %d", MaxProbeSeconds)
		}
	}
}

// probePort checks that port is the targetPort of one of ports.
func (v *validator) probePort(path string, port int, ports PortList) {
	if port < 1 || port > 65535 {
		v.add(path, "must be between 1 and 65535")
		return
	}
	var declared []string
	for _, p := range ports {
		if p.TargetPort == port {
			return
		}
		declared = append(declared, fmt.Sprint(p.TargetPort))
	}
	if len(declared) == 0 {
		v.add(path, "port %d is not exposed: declare it in ports (targetPort)", port)
		return
	}
	v.add(path, "port %d is not exposed: must be one of the targetPorts %s", port, strings.Join(declared, ", "))
}
