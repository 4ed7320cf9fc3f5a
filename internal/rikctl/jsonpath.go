package rikctl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
)

// A small subset of kubectl's JSONPath, enough for scripts (k8s.io's
// implementation would pull a large dependency in): text with {…}
// expressions, each
//
//	a path:   {.name}  {.value.status}  {.[0].name}  {.[*].name}  {.value.ports[*].port}  {['name']}
//	a string: {"\n"}  {"\t"}
//	range:    {range .[*]}{.name}{"\n"}{end}
//
// A path starts at the current object (`.`, `@` or `$`) and goes through
// .field, ['field'], [N] (negative from the end) and [*] or .* (every
// element). Its results are printed separated by spaces; strings as they
// are, other values as JSON; a missing field prints nothing.

// jsonPath is a parsed template.
type jsonPath struct{ nodes []jpNode }

// jpNode is a piece of a template: literal text, a path to print, or a
// range over a path's results with its body.
type jpNode struct {
	text  string
	path  []jpStep // printed, or ranged over with body
	isVal bool
	body  []jpNode // range only
	rng   bool
}

// jpStep is one step of a path: a field, an index, or every element.
type jpStep struct {
	field string
	index int
	kind  byte // 'f' field, 'i' index, '*' every element
}

func parseJSONPath(tmpl string) (*jsonPath, error) {
	nodes, _, sawEnd, err := parseNodes(tmpl)
	if err == nil && sawEnd {
		err = errors.New("{end} without {range}")
	}
	if err != nil {
		return nil, fmt.Errorf("-o jsonpath: %w", err)
	}
	return &jsonPath{nodes: nodes}, nil
}

// parseNodes parses s until its end or an {end}; it returns what follows
// the {end}, if it saw one.
func parseNodes(s string) (nodes []jpNode, rest string, sawEnd bool, err error) {
	for s != "" {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			return append(nodes, jpNode{text: s}), "", false, nil
		}
		if i > 0 {
			nodes = append(nodes, jpNode{text: s[:i]})
		}
		var expr string
		if expr, s, err = cutExpr(s[i+1:]); err != nil {
			return nil, "", false, err
		}
		switch {
		case expr == "end":
			return nodes, s, true, nil
		case strings.HasPrefix(expr, "range "):
			n := jpNode{rng: true}
			if n.path, err = parsePath(strings.TrimSpace(strings.TrimPrefix(expr, "range "))); err != nil {
				return nil, "", false, err
			}
			var closed bool
			if n.body, s, closed, err = parseNodes(s); err != nil {
				return nil, "", false, err
			}
			if !closed {
				return nil, "", false, fmt.Errorf("{%s} without {end}", expr)
			}
			nodes = append(nodes, n)
		case strings.HasPrefix(expr, `"`):
			text, err := strconv.Unquote(expr)
			if err != nil {
				return nil, "", false, fmt.Errorf("string %s: %w", expr, err)
			}
			nodes = append(nodes, jpNode{text: text})
		default:
			path, err := parsePath(expr)
			if err != nil {
				return nil, "", false, err
			}
			nodes = append(nodes, jpNode{isVal: true, path: path})
		}
	}
	return nodes, "", false, nil
}

// cutExpr returns the expression before the closing brace (quotes
// respected) and what follows it.
func cutExpr(s string) (expr, rest string, err error) {
	inQuote := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && inQuote:
			i++
		case c == '"':
			inQuote = !inQuote
		case c == '}' && !inQuote:
			return strings.TrimSpace(s[:i]), s[i+1:], nil
		}
	}
	return "", "", errors.New("unclosed {")
}

// parsePath parses .a.b[0][*]['c'] (after an optional @ or $).
func parsePath(p string) ([]jpStep, error) {
	orig := p
	p = strings.TrimPrefix(strings.TrimPrefix(p, "$"), "@")
	if p != "" && p[0] != '.' && p[0] != '[' {
		return nil, fmt.Errorf("path %q: want it to start with . or [", orig)
	}
	var steps []jpStep
	for p != "" {
		switch {
		case p == ".":
			p = ""
		case strings.HasPrefix(p, ".*"):
			steps, p = append(steps, jpStep{kind: '*'}), p[2:]
		case p[0] == '.':
			j := strings.IndexAny(p[1:], ".[")
			if j < 0 {
				j = len(p) - 1
			}
			name := p[1 : j+1]
			if name == "" {
				p = p[1:] // ".[0]": the current object's element
				continue
			}
			steps, p = append(steps, jpStep{kind: 'f', field: name}), p[j+1:]
		case p[0] == '[':
			j := strings.IndexByte(p, ']')
			if j < 0 {
				return nil, fmt.Errorf("path %q: unclosed [", orig)
			}
			step, err := parseBracket(p[1:j])
			if err != nil {
				return nil, fmt.Errorf("path %q: %w", orig, err)
			}
			steps, p = append(steps, step), p[j+1:]
		default:
			return nil, fmt.Errorf("path %q: unexpected %q", orig, p)
		}
	}
	return steps, nil
}

func parseBracket(in string) (jpStep, error) {
	switch {
	case in == "*":
		return jpStep{kind: '*'}, nil
	case len(in) >= 2 && (in[0] == '\'' || in[0] == '"') && in[len(in)-1] == in[0]:
		return jpStep{kind: 'f', field: in[1 : len(in)-1]}, nil
	}
	n, err := strconv.Atoi(in)
	if err != nil {
		return jpStep{}, fmt.Errorf("[%s]: want an index, * or a quoted field name (filters and slices are not supported)", in)
	}
	return jpStep{kind: 'i', index: n}, nil
}

// execute prints the template for doc; nothing is printed when it fails.
func (p *jsonPath) execute(w io.Writer, doc any) error {
	var buf bytes.Buffer
	if err := runNodes(&buf, p.nodes, doc); err != nil {
		return fmt.Errorf("-o jsonpath: %w", err)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

func runNodes(buf *bytes.Buffer, nodes []jpNode, cur any) error {
	for _, n := range nodes {
		switch {
		case n.rng:
			for _, v := range evalPath(n.path, cur) {
				if err := runNodes(buf, n.body, v); err != nil {
					return err
				}
			}
		case n.isVal:
			for i, v := range evalPath(n.path, cur) {
				if i > 0 {
					buf.WriteByte(' ')
				}
				if err := printValue(buf, v); err != nil {
					return err
				}
			}
		default:
			buf.WriteString(n.text)
		}
	}
	return nil
}

// evalPath returns the values the path leads to from cur.
func evalPath(steps []jpStep, cur any) []any {
	vals := []any{cur}
	for _, s := range steps {
		var next []any
		for _, v := range vals {
			switch s.kind {
			case 'f':
				if m, ok := v.(map[string]any); ok {
					if x, ok := m[s.field]; ok {
						next = append(next, x)
					}
				}
			case 'i':
				if a, ok := v.([]any); ok {
					i := s.index
					if i < 0 {
						i += len(a)
					}
					if i >= 0 && i < len(a) {
						next = append(next, a[i])
					}
				}
			case '*':
				next = append(next, elements(v)...)
			}
		}
		vals = next
	}
	return vals
}

// elements are the items of a list, or the values of an object (by key).
func elements(v any) []any {
	switch v := v.(type) {
	case []any:
		return v
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := make([]any, 0, len(v))
		for _, k := range keys {
			out = append(out, v[k])
		}
		return out
	}
	return nil
}

func printValue(buf *bytes.Buffer, v any) error {
	if s, ok := v.(string); ok {
		buf.WriteString(s)
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	buf.Write(b)
	return nil
}
