package sdn

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/rik-org/rik/internal/atomicfile"
	"github.com/rik-org/rik/internal/workload"
)

// ErrPortConflict: a host port is already exposed by another instance.
var ErrPortConflict = errors.New("host port already in use")

// ErrInvalid: an id or a port mapping the SDN cannot program.
var ErrInvalid = errors.New("invalid network request")

// entry is the desired network state of one instance.
type entry struct {
	Kind  workload.Kind          `json:"kind"`
	IP    netip.Addr             `json:"ip"`
	Ports []workload.PortMapping `json:"ports,omitempty"`
}

// equal reports whether e and o program the same network.
func (e entry) equal(o entry) bool {
	return e.Kind == o.Kind && e.IP == o.IP && slices.Equal(e.Ports, o.Ports)
}

// state is the desired network state of the node: instance id -> entry.
type state map[string]entry

// checkID refuses an id that cannot name a rule comment, a device or a
// file: the one rule for instance ids (workload.ValidInstanceID).
func checkID(id string) error {
	if err := workload.ValidInstanceID(id); err != nil {
		return fmt.Errorf("%w: %w", err, ErrInvalid)
	}
	return nil
}

// normalizePorts validates ports and returns them with defaults applied
// (protocol TCP, targetPort = port), unexposed ones (port 0) dropped, sorted
// by protocol then port. Two mappings of one host port are refused.
func normalizePorts(ports []workload.PortMapping) ([]workload.PortMapping, error) {
	out := make([]workload.PortMapping, 0, len(ports))
	seen := map[string]bool{}
	for i, p := range ports {
		if p.Port == 0 {
			continue
		}
		if p.Port < 0 || p.Port > 65535 {
			return nil, fmt.Errorf("ports[%d].port: %d out of range 1-65535: %w", i, p.Port, ErrInvalid)
		}
		if p.TargetPort == 0 {
			p.TargetPort = p.Port
		}
		if p.TargetPort < 0 || p.TargetPort > 65535 {
			return nil, fmt.Errorf("ports[%d].targetPort: %d out of range 1-65535: %w", i, p.TargetPort, ErrInvalid)
		}
		switch strings.ToUpper(p.Protocol) {
		case "", "TCP":
			p.Protocol = "TCP"
		case "UDP":
			p.Protocol = "UDP"
		default:
			return nil, fmt.Errorf("ports[%d].protocol: %q, want TCP or UDP: %w", i, p.Protocol, ErrInvalid)
		}
		key := portKey(p)
		if seen[key] {
			return nil, fmt.Errorf("ports[%d]: %s asked twice: %w", i, key, ErrPortConflict)
		}
		seen[key] = true
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Protocol != out[j].Protocol {
			return out[i].Protocol < out[j].Protocol
		}
		return out[i].Port < out[j].Port
	})
	return out, nil
}

func portKey(p workload.PortMapping) string {
	return fmt.Sprintf("%s port %d", strings.ToLower(p.Protocol), p.Port)
}

// conflict returns an error wrapping ErrPortConflict naming the first of
// ports (normalised) that another instance than id already exposes.
func (s state) conflict(id string, ports []workload.PortMapping) error {
	owners := map[hostPort]string{}
	for other, e := range s {
		if other == id {
			continue
		}
		for _, p := range e.Ports {
			owners[hostPort{p.Protocol, p.Port}] = other
		}
	}
	for _, p := range ports {
		if other, ok := owners[hostPort{p.Protocol, p.Port}]; ok {
			return fmt.Errorf("%s is exposed by instance %s: %w", portKey(p), other, ErrPortConflict)
		}
	}
	return nil
}

// clone returns a copy of s that can be changed without touching s.
func (s state) clone() state {
	c := make(state, len(s))
	for id, e := range s {
		c[id] = e
	}
	return c
}

type stateFile struct {
	Instances state `json:"instances"`
}

func loadState(path string) (state, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return state{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading sdn state %s: %w", path, err)
	}
	var f stateFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("reading sdn state %s: %w", path, err)
	}
	if f.Instances == nil {
		f.Instances = state{}
	}
	for id, e := range f.Instances {
		// Drop what could not be programmed rather than fail forever.
		ports, err := normalizePorts(e.Ports)
		if checkID(id) != nil || err != nil || !e.IP.IsValid() {
			delete(f.Instances, id)
			continue
		}
		e.Ports = ports
		f.Instances[id] = e
	}
	return f.Instances, nil
}

func saveState(path string, s state) error {
	b, err := json.MarshalIndent(stateFile{Instances: s}, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding sdn state: %w", err)
	}
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return fmt.Errorf("saving sdn state: %w", err)
	}
	return nil
}
