package rikctl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/template"
)

// Output formats besides the table and data ones: -o name, -o
// jsonpath=TEMPLATE, -o go-template=TEMPLATE. Both templates work on the
// JSON answer ({id, name, value} items, a list of them for a list), with
// JSON field names, like kubectl's.
const (
	FormatName       = "name"
	prefixJSONPath   = "jsonpath="
	prefixGoTemplate = "go-template="
)

// isData says whether format prints the answer's data rather than a
// table.
func isData(format string) bool {
	switch {
	case format == FormatJSON, format == FormatYAML, format == FormatName,
		strings.HasPrefix(format, prefixJSONPath), strings.HasPrefix(format, prefixGoTemplate):
		return true
	}
	return false
}

// checkTemplate checks the template of a jsonpath or go-template format.
func checkTemplate(format string) error {
	switch {
	case strings.HasPrefix(format, prefixJSONPath):
		_, err := parseJSONPath(strings.TrimPrefix(format, prefixJSONPath))
		return err
	case strings.HasPrefix(format, prefixGoTemplate):
		_, err := template.New("output").Option("missingkey=zero").Parse(strings.TrimPrefix(format, prefixGoTemplate))
		if err != nil {
			return fmt.Errorf("-o go-template: %w", err)
		}
	}
	return nil
}

// writeOutput writes v, one item or a list of items of kind, in a data
// format.
func writeOutput(w io.Writer, format, kind string, v any) error {
	if format == FormatJSON || format == FormatYAML {
		return writeData(w, format, v)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding output: %w", err)
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("encoding output: %w", err)
	}
	switch {
	case format == FormatName:
		return writeNames(w, kind, doc)
	case strings.HasPrefix(format, prefixJSONPath):
		p, err := parseJSONPath(strings.TrimPrefix(format, prefixJSONPath))
		if err != nil {
			return err
		}
		return p.execute(w, doc)
	case strings.HasPrefix(format, prefixGoTemplate):
		t, err := template.New("output").Option("missingkey=zero").Parse(strings.TrimPrefix(format, prefixGoTemplate))
		if err != nil {
			return fmt.Errorf("-o go-template: %w", err)
		}
		var buf bytes.Buffer // nothing printed from a template that fails half-way
		if err := t.Execute(&buf, doc); err != nil {
			return fmt.Errorf("-o go-template: %w", err)
		}
		_, err = w.Write(buf.Bytes())
		return err
	}
	return fmt.Errorf("unknown output format %q", format)
}

// writeNames writes kind/name for the item doc is, or each item of the
// list it is.
func writeNames(w io.Writer, kind string, doc any) error {
	items, ok := doc.([]any)
	if !ok {
		items = []any{doc}
	}
	for _, it := range items {
		m, _ := it.(map[string]any)
		name, _ := m["name"].(string)
		if name == "" {
			name, _ = m["id"].(string)
		}
		if _, err := fmt.Fprintf(w, "%s/%s\n", kind, clean(name)); err != nil {
			return err
		}
	}
	return nil
}
