package workload

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// Defaults applied by SetDefaults.
const (
	DefaultAPIVersion     = "v1"
	DefaultRestartPolicy  = RestartAlways
	DefaultProtocol       = "TCP"
	DefaultFunctionVCPUs  = 1
	DefaultFunctionMemory = 128 // MiB
)

// Parse decodes a JSON definition (RIK's spellings accepted), applies the
// defaults and validates it. It is strict: a field the definition does not
// know, or one given twice, is an error at its path (a misspelt
// "resource" must not leave a pod unlimited). Every error wraps
// ErrInvalid; decoding and validation problems come as a *ValidationError
// listing every problem found.
func Parse(data []byte) (Workload, error) {
	if len(data) > MaxDefinitionBytes {
		return Workload{}, invalid("", fmt.Sprintf("definition larger than %d bytes", MaxDefinitionBytes))
	}
	var w Workload
	if err := json.Unmarshal(data, &w); err != nil {
		return Workload{}, decodeError(err)
	}
	unknown := unknownFields(data, reflect.TypeFor[Workload]())
	w.SetDefaults()
	err := Validate(w)
	if len(unknown) == 0 {
		if err != nil {
			return Workload{}, err
		}
		return w, nil
	}
	ve := &ValidationError{Errors: unknown}
	if v, ok := err.(*ValidationError); ok {
		ve.Errors = append(ve.Errors, v.Errors...)
	}
	return Workload{}, ve
}

// decodeError turns a JSON decoding error into a *ValidationError.
func decodeError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return invalid("", fmt.Sprintf("invalid JSON at offset %d: %v", syn.Offset, syn))
	case errors.As(err, &typ):
		// Paths go through the embedded "plain" types of our decoders.
		field := strings.TrimPrefix(strings.ReplaceAll("."+typ.Field, ".plain.", "."), ".")
		if field == "" || field == "plain" {
			field = "(root)"
		}
		return invalid(field, fmt.Sprintf("must be %s, got %s", jsonType(typ.Type.Kind().String()), typ.Value))
	}
	return invalid("", "invalid JSON: "+err.Error())
}

func jsonType(goKind string) string {
	switch {
	case strings.HasPrefix(goKind, "int"), strings.HasPrefix(goKind, "uint"):
		return "an integer"
	case strings.HasPrefix(goKind, "float"):
		return "a number"
	case goKind == "string":
		return "a string"
	case goKind == "bool":
		return "a boolean"
	case goKind == "slice", goKind == "array":
		return "a list"
	case goKind == "struct", goKind == "map", goKind == "ptr":
		return "an object"
	}
	return goKind
}

// SetDefaults fills what a definition may leave out: apiVersion v1, restart
// policy Always, protocol TCP, targetPort = port, function vcpus 1 and
// 128 MiB. It also normalises the case of kind, restart policy, protocol and
// sha256. Replicas is defaulted (to 1) when decoding, because 0 is valid.
func (w *Workload) SetDefaults() {
	if w.APIVersion == "" {
		w.APIVersion = DefaultAPIVersion
	}
	if k, err := ParseKind(string(w.Kind)); err == nil {
		w.Kind = k
	}
	if w.RestartPolicy == "" {
		w.RestartPolicy = DefaultRestartPolicy
	}
	for _, p := range []RestartPolicy{RestartNever, RestartOnFailure, RestartAlways} {
		if strings.EqualFold(string(w.RestartPolicy), string(p)) {
			w.RestartPolicy = p
		}
	}
	for i := range w.Spec.Containers {
		defaultPorts(w.Spec.Containers[i].Ports)
	}
	if f := w.Spec.Function; f != nil {
		if f.Execution.VCPUs == 0 {
			f.Execution.VCPUs = DefaultFunctionVCPUs
		}
		if f.Execution.Memory == 0 {
			f.Execution.Memory = DefaultFunctionMemory
		}
		f.Execution.SHA256 = strings.ToLower(f.Execution.SHA256)
		defaultPorts(f.Exposure)
	}
}

func defaultPorts(ports PortList) {
	for i := range ports {
		p := &ports[i]
		if p.Protocol == "" {
			p.Protocol = DefaultProtocol
		}
		p.Protocol = strings.ToUpper(p.Protocol)
		if p.TargetPort == 0 {
			p.TargetPort = p.Port
		}
	}
}

// HostPorts lists every port exposed on the node: container ports with
// Port > 0, and the function's exposure with Port > 0. Defaults (targetPort,
// protocol) are applied to the result even if SetDefaults was not called.
func (w Workload) HostPorts() []PortMapping {
	var out []PortMapping
	add := func(ports PortList) {
		for _, p := range ports {
			if p.Port <= 0 {
				continue
			}
			m := PortMapping{Port: p.Port, TargetPort: p.TargetPort, Protocol: strings.ToUpper(p.Protocol)}
			if m.TargetPort == 0 { // not defaulted yet
				m.TargetPort = m.Port
			}
			if m.Protocol == "" {
				m.Protocol = DefaultProtocol
			}
			out = append(out, m)
		}
	}
	for _, c := range w.Spec.Containers {
		add(c.Ports)
	}
	if w.Spec.Function != nil {
		add(w.Spec.Function.Exposure)
	}
	return out
}

// Requests is what one instance asks of a node: for a pod the sum of its
// containers' resources, for a function vcpus*1000 millicores and its memory
// (defaults used when unset).
func (w Workload) Requests() (cpuMillis, memoryMiB int64) {
	if w.Kind == KindFunction {
		if f := w.Spec.Function; f != nil {
			cpuMillis, memoryMiB = int64(f.Execution.VCPUs)*1000, int64(f.Execution.Memory)
		}
		if cpuMillis <= 0 {
			cpuMillis = DefaultFunctionVCPUs * 1000
		}
		if memoryMiB <= 0 {
			memoryMiB = DefaultFunctionMemory
		}
		return cpuMillis, memoryMiB
	}
	for _, c := range w.Spec.Containers {
		if c.Resources != nil {
			cpuMillis += int64(max(c.Resources.CPU, 0))
			memoryMiB += int64(max(c.Resources.Memory, 0))
		}
	}
	return cpuMillis, memoryMiB
}
