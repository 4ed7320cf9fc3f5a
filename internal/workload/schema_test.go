package workload

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/rik-org/rik/api"
)

// schemaValidate checks v against the subset of JSON Schema that
// api/workload.schema.json uses: type, properties, required, enum, pattern,
// minimum, maximum, minLength, maxLength, maxItems, items, oneOf, $ref to
// #/$defs, additionalProperties: false. It returns the problems found, or fails the test on a keyword it
// does not know (so the schema cannot silently grow beyond what is checked).
func schemaValidate(t *testing.T, root, s map[string]any, v any, path string) []string {
	t.Helper()
	var errs []string
	for key := range s {
		switch key {
		case "$schema", "$id", "$defs", "title", "description", "default",
			"type", "properties", "required", "enum", "pattern", "minimum", "maximum",
			"minLength", "maxLength", "maxItems", "items", "oneOf", "$ref", "additionalProperties":
		default:
			t.Fatalf("schema at %s uses unsupported keyword %q", path, key)
		}
	}
	if ref, ok := s["$ref"].(string); ok {
		name, ok := strings.CutPrefix(ref, "#/$defs/")
		if !ok {
			t.Fatalf("unsupported $ref %q", ref)
		}
		def, ok := root["$defs"].(map[string]any)[name].(map[string]any)
		if !ok {
			t.Fatalf("$ref %q: no such definition", ref)
		}
		errs = append(errs, schemaValidate(t, root, def, v, path)...)
	}
	if typ, ok := s["type"]; ok {
		var types []string
		switch typ := typ.(type) {
		case string:
			types = []string{typ}
		case []any:
			for _, x := range typ {
				types = append(types, x.(string))
			}
		}
		if !slices.Contains(types, jsonTypeOf(v)) && !(jsonTypeOf(v) == "integer" && slices.Contains(types, "number")) {
			return append(errs, fmt.Sprintf("%s: type %s, want %v", path, jsonTypeOf(v), types))
		}
	}
	if enum, ok := s["enum"].([]any); ok && !slices.ContainsFunc(enum, func(e any) bool { return reflect.DeepEqual(e, v) }) {
		errs = append(errs, fmt.Sprintf("%s: %v not in enum", path, v))
	}
	if oneOf, ok := s["oneOf"].([]any); ok {
		n := 0
		for _, sub := range oneOf {
			if len(schemaValidate(t, root, sub.(map[string]any), v, path)) == 0 {
				n++
			}
		}
		if n != 1 {
			errs = append(errs, fmt.Sprintf("%s: matches %d of oneOf, want 1", path, n))
		}
	}
	switch v := v.(type) {
	case string:
		if p, ok := s["pattern"].(string); ok && !regexp.MustCompile(p).MatchString(v) {
			errs = append(errs, fmt.Sprintf("%s: %q does not match %s", path, v, p))
		}
		if m, ok := s["minLength"].(float64); ok && float64(len([]rune(v))) < m {
			errs = append(errs, fmt.Sprintf("%s: shorter than %v", path, m))
		}
		if m, ok := s["maxLength"].(float64); ok && float64(len([]rune(v))) > m {
			errs = append(errs, fmt.Sprintf("%s: longer than %v", path, m))
		}
	case float64:
		if m, ok := s["minimum"].(float64); ok && v < m {
			errs = append(errs, fmt.Sprintf("%s: %v < %v", path, v, m))
		}
		if m, ok := s["maximum"].(float64); ok && v > m {
			errs = append(errs, fmt.Sprintf("%s: %v > %v", path, v, m))
		}
	case []any:
		if m, ok := s["maxItems"].(float64); ok && float64(len(v)) > m {
			errs = append(errs, fmt.Sprintf("%s: more than %v items", path, m))
		}
		if items, ok := s["items"].(map[string]any); ok {
			for i, x := range v {
				errs = append(errs, schemaValidate(t, root, items, x, fmt.Sprintf("%s[%d]", path, i))...)
			}
		}
	case map[string]any:
		if req, ok := s["required"].([]any); ok {
			for _, r := range req {
				if _, ok := v[r.(string)]; !ok {
					errs = append(errs, fmt.Sprintf("%s.%s: required", path, r))
				}
			}
		}
		props, _ := s["properties"].(map[string]any)
		for k, x := range v {
			if ps, ok := props[k].(map[string]any); ok {
				errs = append(errs, schemaValidate(t, root, ps, x, path+"."+k)...)
			} else if s["additionalProperties"] == false {
				errs = append(errs, fmt.Sprintf("%s.%s: unknown field", path, k))
			}
		}
	}
	return errs
}

func jsonTypeOf(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case float64:
		if v == math.Trunc(v) {
			return "integer"
		}
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

func loadSchema(t *testing.T) map[string]any {
	t.Helper()
	var s map[string]any
	if err := json.Unmarshal(api.WorkloadSchema, &s); err != nil {
		t.Fatalf("api/workload.schema.json: %v", err)
	}
	return s
}

func validateAgainstSchema(t *testing.T, doc []byte) []string {
	t.Helper()
	s := loadSchema(t)
	var v any
	d := json.NewDecoder(bytes.NewReader(doc))
	if err := d.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return schemaValidate(t, s, s, v, "$")
}

func TestSchemaListsEveryField(t *testing.T) {
	s := loadSchema(t)
	props := s["properties"].(map[string]any)
	// Every JSON field of Workload, by its tag, plus the accepted alias.
	want := []string{"apiVersion"}
	rt := reflect.TypeFor[Workload]()
	for i := range rt.NumField() {
		name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		want = append(want, name)
	}
	for _, f := range want {
		if _, ok := props[f]; !ok {
			t.Errorf("schema has no top-level property %q", f)
		}
	}
	defs := s["$defs"].(map[string]any)
	for def, typ := range map[string]reflect.Type{
		"container": reflect.TypeFor[Container](),
		"port":      reflect.TypeFor[Port](),
		"envVar":    reflect.TypeFor[EnvVar](),
	} {
		dp := defs[def].(map[string]any)["properties"].(map[string]any)
		for i := range typ.NumField() {
			name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			if _, ok := dp[name]; !ok {
				t.Errorf("schema $defs.%s has no property %q", def, name)
			}
		}
	}
}

func TestExamplesMatchSchema(t *testing.T) {
	for _, f := range exampleFiles(t) {
		if errs := validateAgainstSchema(t, readExample(t, f)); len(errs) > 0 {
			t.Errorf("%s does not match the schema:\n%s", f, strings.Join(errs, "\n"))
		}
	}
}

// The schema rejects what Parse rejects, for a few representative cases.
func TestSchemaRejectsInvalid(t *testing.T) {
	for _, doc := range []string{
		`{"kind":"pod","spec":{"containers":[{"name":"c","image":"i"}]}}`,
		`{"kind":"vm","name":"x","spec":{}}`,
		`{"kind":"pod","name":"Bad_Name","spec":{"containers":[{"name":"c","image":"i"}]}}`,
		`{"kind":"pod","name":"x","spec":{"containers":[{"name":"c"}]}}`,
		`{"kind":"pod","name":"x","spec":{"containers":[{"name":"c","image":"i","ports":{"port":70000}}]}}`,
		`{"kind":"pod","name":"x","replicas":-1,"spec":{"containers":[{"name":"c","image":"i"}]}}`,
		`{"kind":"function","name":"f","spec":{"function":{"execution":{"rootfs":"ftp://x"}}}}`,
		`{"kind":"function","name":"f","spec":{"function":{"execution":{"rootfs":"http://x","vcpus":64}}}}`,
	} {
		if errs := validateAgainstSchema(t, []byte(doc)); len(errs) == 0 {
			t.Errorf("schema accepts %s", doc)
		}
		if _, err := Parse([]byte(doc)); err == nil {
			t.Errorf("Parse accepts %s", doc)
		}
	}
}
