package scheduler

import (
	"fmt"
	"strings"

	"github.com/rik-org/rik/internal/scheduler/placement"
	"github.com/rik-org/rik/internal/workload"
)

// parseRequest parses a workload definition (JSON) into what placement needs.
func parseRequest(definition string) (placement.Request, error) {
	w, err := workload.Parse([]byte(definition))
	if err != nil {
		return placement.Request{}, fmt.Errorf("parsing definition: %w", err)
	}
	cpu, mem := w.Requests()
	req := placement.Request{CPUMillis: cpu, MemoryMiB: mem, Kind: string(w.Kind)}
	for _, p := range w.HostPorts() {
		if p.Port <= 0 || p.Port > 65535 {
			continue
		}
		proto := strings.ToUpper(p.Protocol)
		if proto == "" {
			proto = "TCP"
		}
		req.HostPorts = append(req.HostPorts, placement.Port{Number: uint32(p.Port), Protocol: proto})
	}
	return req, nil
}
