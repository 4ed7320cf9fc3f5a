package workload

import (
	"bytes"
	"encoding/json"
)

// UnmarshalJSON accepts RIK's spellings: "api_version" or "apiVersion", and
// sets Replicas to 1 when it is absent (an explicit 0 is kept).
func (w *Workload) UnmarshalJSON(data []byte) error {
	type plain Workload // no methods: no recursion
	var aux struct {
		plain
		APIVersionCamel string `json:"apiVersion"`
		Replicas        *int   `json:"replicas"`
	}
	if err := json.Unmarshal(data, &aux); err != nil {
		return err
	}
	*w = Workload(aux.plain)
	if w.APIVersion == "" {
		w.APIVersion = aux.APIVersionCamel
	}
	w.Replicas = 1
	if aux.Replicas != nil {
		w.Replicas = *aux.Replicas
	}
	return nil
}

// UnmarshalJSON normalises the known spellings of a kind ("pods", "Pod",
// "Function"...); anything else is kept as given for Validate to report.
func (k *Kind) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	if n, err := ParseKind(s); err == nil {
		*k = n
		return nil
	}
	*k = Kind(s)
	return nil
}

// UnmarshalJSON accepts a list of ports, a single port object, or null.
func (l *PortList) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '{' {
		var p Port
		if err := json.Unmarshal(data, &p); err != nil {
			return err
		}
		*l = PortList{p}
		return nil
	}
	var ps []Port
	if err := json.Unmarshal(data, &ps); err != nil {
		return err
	}
	*l = ps
	return nil
}

// UnmarshalJSON accepts RIK's "target_port" as an alias of "targetPort".
func (p *Port) UnmarshalJSON(data []byte) error {
	type plain Port
	var aux struct {
		plain
		TargetPortSnake *int `json:"target_port"`
	}
	if err := json.Unmarshal(data, &aux); err != nil {
		return err
	}
	*p = Port(aux.plain)
	if p.TargetPort == 0 && aux.TargetPortSnake != nil {
		p.TargetPort = *aux.TargetPortSnake
	}
	return nil
}
