package workload

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
)

// aliases are the JSON keys a type accepts besides its fields' tags: RIK's
// spellings, and RIK fields rik reads and ignores (a port's "type":
// "NodePort", an execution's "secure").
var aliases = map[reflect.Type][]string{
	reflect.TypeFor[Workload]():  {"apiVersion"},
	reflect.TypeFor[Port]():      {"target_port", "type"},
	reflect.TypeFor[Execution](): {"secure"},
}

// unknownFields reports, with its field path, every key of the JSON in data
// that the Go type t does not declare (json tags of its fields, and
// aliases), and every key given twice in one object. It is driven by the
// types only, so a field added to a type is accepted without more code.
// data must be valid JSON (decode it first: type errors are its business).
func unknownFields(data []byte, t reflect.Type) []FieldError {
	w := &walker{dec: json.NewDecoder(bytes.NewReader(data)), fields: map[reflect.Type]map[string]reflect.Type{}}
	if err := w.value(t, ""); err != nil {
		return []FieldError{{Msg: "invalid JSON: " + err.Error()}}
	}
	return w.errs
}

type walker struct {
	dec    *json.Decoder
	errs   []FieldError
	fields map[reflect.Type]map[string]reflect.Type // known keys by type
}

// value walks one JSON value expected to decode into t; t is nil inside
// something already reported (nothing more is said about it).
func (w *walker) value(t reflect.Type, path string) error {
	tok, err := w.dec.Token()
	if err != nil {
		return err
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch tok {
	case json.Delim('{'):
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			t = t.Elem() // a single object for a list (RIK's ports)
		}
		return w.object(t, path)
	case json.Delim('['):
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; w.dec.More(); i++ {
			if err := w.value(elem, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		_, err = w.dec.Token() // ]
		return err
	}
	return nil // a scalar
}

func (w *walker) object(t reflect.Type, path string) error {
	var known map[string]reflect.Type
	if t != nil && t.Kind() == reflect.Struct {
		known = w.known(t)
	}
	seen := map[string]bool{}
	for w.dec.More() {
		tok, err := w.dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		p := key
		if path != "" {
			p = path + "." + key
		}
		if seen[key] {
			w.errs = append(w.errs, FieldError{Field: p, Msg: "given twice"})
		}
		seen[key] = true
		ft, ok := known[key]
		if known != nil && !ok {
			w.errs = append(w.errs, FieldError{Field: p, Msg: "unknown field" + suggest(key, known)})
		}
		if err := w.value(ft, p); err != nil {
			return err
		}
	}
	_, err := w.dec.Token() // }
	return err
}

// known returns the JSON keys of struct type t and the type each decodes
// into (nil for aliases: their content is not checked).
func (w *walker) known(t reflect.Type) map[string]reflect.Type {
	if m, ok := w.fields[t]; ok {
		return m
	}
	m := map[string]reflect.Type{}
	addFields(m, t)
	for _, a := range aliases[t] {
		m[a] = nil
	}
	w.fields[t] = m
	return m
}

// addFields adds the JSON keys of t's fields, as encoding/json names them
// (embedded structs without a tag are flattened).
func addFields(m map[string]reflect.Type, t reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				addFields(m, ft)
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		m[name] = f.Type
	}
}

// suggest names the known key closest to key, when one is close enough to
// be a typo: the same but for case, or at most 2 edits away (1 for short
// keys).
func suggest(key string, known map[string]reflect.Type) string {
	best, bestDist := "", 3
	if len(key) <= 4 {
		bestDist = 2
	}
	for k := range known {
		d := editDistance(strings.ToLower(key), strings.ToLower(k))
		if d < bestDist || (d == bestDist && best != "" && k < best) {
			best, bestDist = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(", did you mean %q?", best)
}

// editDistance is the Levenshtein distance between a and b (bytes), or a
// large number for long keys (nobody mistypes 64 characters).
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 20
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
