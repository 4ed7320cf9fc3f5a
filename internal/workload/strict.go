package workload

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
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
// data should be valid JSON (decode it first: syntax and type errors are
// encoding/json's business); on anything else it may say "invalid JSON",
// and never panics.
func unknownFields(data []byte, t reflect.Type) []FieldError {
	w := &walker{data: data}
	err := w.value(t)
	if w.skipSpace(); err == nil && w.i < len(w.data) {
		err = w.fail()
	}
	if err != nil {
		return []FieldError{{Msg: "invalid JSON: " + err.Error()}}
	}
	return w.errs
}

// walker walks JSON text once, without building values: the path of the
// value at hand is in path (appended and cut back as it goes).
type walker struct {
	data []byte
	i    int
	path []byte
	errs []FieldError
}

var errSyntax = errors.New("unexpected input")

func (w *walker) fail() error { return fmt.Errorf("%w at offset %d", errSyntax, w.i) }

func (w *walker) report(msg string) {
	w.errs = append(w.errs, FieldError{Field: string(w.path), Msg: msg})
}

func (w *walker) skipSpace() {
	for w.i < len(w.data) && (w.data[w.i] == ' ' || w.data[w.i] == '\t' || w.data[w.i] == '\n' || w.data[w.i] == '\r') {
		w.i++
	}
}

// value walks one JSON value expected to decode into t; t is nil inside
// something already reported (nothing more is said about it).
func (w *walker) value(t reflect.Type) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	w.skipSpace()
	if w.i >= len(w.data) {
		return w.fail()
	}
	switch w.data[w.i] {
	case '{':
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			t = t.Elem() // a single object for a list (RIK's ports)
		}
		return w.object(t)
	case '[':
		return w.array(t)
	case '"':
		_, err := w.str(false)
		return err
	}
	// A number, true, false or null: up to the next delimiter.
	start := w.i
	for w.i < len(w.data) && !strings.ContainsRune(",]} \t\n\r", rune(w.data[w.i])) {
		w.i++
	}
	if w.i == start {
		return w.fail()
	}
	return nil
}

func (w *walker) array(t reflect.Type) error {
	var elem reflect.Type
	if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
		elem = t.Elem()
	}
	w.i++ // [
	base := len(w.path)
	for n := 0; ; n++ {
		w.skipSpace()
		if n == 0 && w.i < len(w.data) && w.data[w.i] == ']' {
			w.i++
			return nil
		}
		w.path = fmt.Appendf(w.path[:base], "[%d]", n)
		if err := w.value(elem); err != nil {
			return err
		}
		w.path = w.path[:base]
		if done, err := w.next(']'); done || err != nil {
			return err
		}
	}
}

func (w *walker) object(t reflect.Type) error {
	var known map[string]reflect.Type
	if t != nil && t.Kind() == reflect.Struct {
		known = knownKeys(t)
	}
	w.i++ // {
	base := len(w.path)
	var seen [][]byte // keys are few: a list beats a map
	for n := 0; ; n++ {
		w.skipSpace()
		if n == 0 && w.i < len(w.data) && w.data[w.i] == '}' {
			w.i++
			return nil
		}
		key, err := w.str(true)
		if err != nil {
			return err
		}
		if w.skipSpace(); w.i >= len(w.data) || w.data[w.i] != ':' {
			return w.fail()
		}
		w.i++
		if base > 0 {
			w.path = append(w.path, '.')
		}
		w.path = append(w.path, key...)
		if slices.ContainsFunc(seen, func(k []byte) bool { return bytes.Equal(k, key) }) {
			w.report("given twice")
		}
		seen = append(seen, key)
		ft, ok := known[string(key)]
		if known != nil && !ok {
			w.report("unknown field" + suggest(string(key), known))
		}
		if err := w.value(ft); err != nil {
			return err
		}
		w.path = w.path[:base]
		if done, err := w.next('}'); done || err != nil {
			return err
		}
	}
}

// next reads what follows an element: a comma, or end (done).
func (w *walker) next(end byte) (done bool, err error) {
	w.skipSpace()
	switch {
	case w.i >= len(w.data):
		return false, w.fail()
	case w.data[w.i] == ',':
		w.i++
		return false, nil
	case w.data[w.i] == end:
		w.i++
		return true, nil
	}
	return false, w.fail()
}

// str reads a JSON string and, if decode, returns it decoded as
// encoding/json does (escapes, invalid UTF-8 replaced).
func (w *walker) str(decode bool) ([]byte, error) {
	if w.i >= len(w.data) || w.data[w.i] != '"' {
		return nil, w.fail()
	}
	start, escaped := w.i, false
	for w.i++; w.i < len(w.data); w.i++ {
		switch c := w.data[w.i]; {
		case c >= utf8.RuneSelf:
			escaped = true // decoded the slow way
		case c == '\\':
			escaped = true
			w.i++
		case c == '"':
			w.i++
			raw := w.data[start+1 : w.i-1]
			if !decode || !escaped {
				return raw, nil
			}
			var s string
			if err := json.Unmarshal(w.data[start:w.i], &s); err != nil {
				return nil, w.fail()
			}
			return []byte(s), nil
		}
	}
	return nil, w.fail()
}

// knownFields caches the keys of each type: reflect.Type -> map[string]reflect.Type.
var knownFields sync.Map

// knownKeys returns the JSON keys of struct type t and the type each decodes
// into (nil for aliases: their content is not checked).
func knownKeys(t reflect.Type) map[string]reflect.Type {
	if m, ok := knownFields.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	m := map[string]reflect.Type{}
	addFields(m, t)
	for _, a := range aliases[t] {
		m[a] = nil
	}
	knownFields.Store(t, m)
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
