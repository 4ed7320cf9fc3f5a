package workload

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseRefusesUnknownFields(t *testing.T) {
	pod := func(container string) string {
		return `{"kind":"pod","name":"p","spec":{"containers":[` + container + `]}}`
	}
	tests := []struct {
		name string
		in   string
		want []FieldError // exactly, in order
	}{
		{"misspelt resources", pod(`{"name":"c","image":"i","resource":{"cpu":100}}`),
			[]FieldError{{"spec.containers[0].resource", `unknown field, did you mean "resources"?`}}},
		{"case matters", `{"Kind":"pod","name":"p","spec":{"containers":[{"name":"c","image":"i"}]}}`,
			[]FieldError{{"Kind", `unknown field, did you mean "kind"?`}}},
		{"no suggestion when far", pod(`{"name":"c","image":"i","privileged":true}`),
			[]FieldError{{"spec.containers[0].privileged", "unknown field"}}},
		{"second container", pod(`{"name":"a","image":"i"},{"name":"b","image":"i","env":[{"name":"K","valeu":"v"}]}`),
			[]FieldError{{"spec.containers[1].env[0].valeu", `unknown field, did you mean "value"?`}}},
		{"single-object ports", pod(`{"name":"c","image":"i","ports":{"port":8080,"targetport":80}}`),
			[]FieldError{{"spec.containers[0].ports.targetport", `unknown field, did you mean "targetPort"?`}}},
		{"function fields", `{"kind":"function","name":"f","spec":{"function":{"execution":{"rootFS":"http://x/r","rootfs":"http://x/r"},"exposure":[{"port":8080},{"hostPort":8081,"targetPort":80}]}}}`,
			[]FieldError{{"spec.function.execution.rootFS", `unknown field, did you mean "rootfs"?`},
				{"spec.function.exposure[1].hostPort", "unknown field"}}},
		{"inside an unknown field nothing more is said", `{"kind":"pod","name":"p","x":{"y":{"z":1}},"spec":{"containers":[{"name":"c","image":"i"}]}}`,
			[]FieldError{{"x", "unknown field"}}},
		{"a key given twice", `{"kind":"pod","name":"p","name":"q","spec":{"containers":[{"name":"c","image":"i"}]}}`,
			[]FieldError{{"name", "given twice"}}},
		{"listed with the validation errors", pod(`{"name":"c","imagee":"i"}`),
			[]FieldError{{"spec.containers[0].imagee", `unknown field, did you mean "image"?`}, {"spec.containers[0].image", "required"}}},
		{"spec", `{"kind":"pod","name":"p","spec":{"container":[{"name":"c","image":"i"}]}}`,
			[]FieldError{{"spec.container", `unknown field, did you mean "containers"?`}, {"spec.containers", "at least one container required"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			var ve *ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse = %v, want a *ValidationError wrapping ErrInvalid", err)
			}
			if d := cmp.Diff(tt.want, ve.Errors); d != "" {
				t.Errorf("errors (-want +got):\n%s", d)
			}
		})
	}
}

// RIK's spellings and the RIK fields rik ignores are not unknown.
func TestParseAcceptsRIKSpellings(t *testing.T) {
	for _, in := range []string{
		`{"api_version":"v0","kind":"pods","name":"a","replicas":null,"spec":{"containers":[{"name":"a","image":"i","env":null,"ports":{"port":8080,"target_port":80,"protocol":"TCP","type":"NodePort"}}],"function":null}}`,
		`{"apiVersion":"v0","kind":"Function","name":"f","spec":{"containers":[],"function":{"execution":{"rootfs":"https://example.com/r.ext4","secure":false},"exposure":{"port":8080,"targetPort":80,"type":"NodePort"}}}}`,
	} {
		if _, err := Parse([]byte(in)); err != nil {
			t.Errorf("Parse(%s): %v", in, err)
		}
	}
}

// The decoder is driven by the Go types: a field another file adds to a
// type (say a securityContext on containers) is accepted with no change.
func TestUnknownFieldsFollowsTheTypes(t *testing.T) {
	type capabilities struct {
		Add  []string `json:"add,omitempty"`
		Drop []string `json:"drop,omitempty"`
	}
	type securityContext struct {
		RunAsUser    *int64        `json:"runAsUser,omitempty"`
		Capabilities *capabilities `json:"capabilities,omitempty"`
	}
	type container struct {
		Container
		SecurityContext *securityContext `json:"securityContext,omitempty"`
		internal        int
	}
	type spec struct {
		Containers []container `json:"containers"`
	}
	type workload struct {
		Name string `json:"name"`
		Spec spec   `json:"spec"`
		Skip int    `json:"-"`
	}
	in := `{"name":"p","spec":{"containers":[{"name":"c","image":"i","securityContext":{"runAsUser":1000,"capabilities":{"drop":["ALL"],"ad":["NET_ADMIN"]}}}]},"Skip":1,"internal":2}`
	got := unknownFields([]byte(in), reflect.TypeFor[workload]())
	want := []FieldError{
		{"spec.containers[0].securityContext.capabilities.ad", `unknown field, did you mean "add"?`},
		{"Skip", "unknown field"}, {"internal", "unknown field"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("unknownFields (-want +got):\n%s", d)
	}
}

func TestSuggest(t *testing.T) {
	known := map[string]reflect.Type{"resources": nil, "restartPolicy": nil, "port": nil, "ports": nil, "name": nil}
	tests := []struct{ key, want string }{
		{"resource", "resources"}, {"Resources", "resources"}, {"restartpolicy", "restartPolicy"},
		{"prot", ""}, {"portz", "port"}, {"nam", "name"}, {"xyz", ""}, {strings.Repeat("a", 100), ""},
	}
	for _, tt := range tests {
		got := suggest(tt.key, known)
		want := ""
		if tt.want != "" {
			want = `, did you mean "` + tt.want + `"?`
		}
		if got != want {
			t.Errorf("suggest(%q) = %q, want %q", tt.key, got, want)
		}
	}
}

// Every key the schema lists is one the decoder accepts, and the other way
// round, for every object of a definition.
func TestSchemaAndDecoderAgree(t *testing.T) {
	s := loadSchema(t)
	defs := s["$defs"].(map[string]any)
	props := func(m map[string]any) []string {
		var out []string
		for k := range m["properties"].(map[string]any) {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	fn := defs["function"].(map[string]any)
	for name, c := range map[string]struct {
		schema map[string]any
		typ    reflect.Type
	}{
		"workload":  {s, reflect.TypeFor[Workload]()},
		"spec":      {s["properties"].(map[string]any)["spec"].(map[string]any), reflect.TypeFor[Spec]()},
		"container": {defs["container"].(map[string]any), reflect.TypeFor[Container]()},
		"resources": {defs["container"].(map[string]any)["properties"].(map[string]any)["resources"].(map[string]any), reflect.TypeFor[Resources]()},
		"envVar":    {defs["envVar"].(map[string]any), reflect.TypeFor[EnvVar]()},
		"port":      {defs["port"].(map[string]any), reflect.TypeFor[Port]()},
		"function":  {fn, reflect.TypeFor[Function]()},
		"execution": {fn["properties"].(map[string]any)["execution"].(map[string]any), reflect.TypeFor[Execution]()},
	} {
		var keys []string
		for k := range knownKeys(c.typ) {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if d := cmp.Diff(keys, props(c.schema)); d != "" {
			t.Errorf("%s: decoder keys (-) vs schema properties (+):\n%s", name, d)
		}
		if c.schema["additionalProperties"] != false {
			t.Errorf("%s: schema does not refuse other fields", name)
		}
	}
}

func TestUnknownFieldsOnBrokenJSON(t *testing.T) {
	// Parse decodes first; the walker on its own reports broken input
	// instead of panicking.
	for _, in := range []string{`{"a":`, `[1,`, `{"a" 1}`, ``} {
		errs := unknownFields([]byte(in), reflect.TypeFor[Workload]())
		if len(errs) != 1 || !strings.HasPrefix(errs[0].Msg, "invalid JSON") {
			t.Errorf("unknownFields(%q) = %v", in, errs)
		}
	}
	if errs := unknownFields(bytes.Repeat([]byte("["), 100), reflect.TypeFor[Workload]()); len(errs) != 1 {
		t.Errorf("unbalanced: %v", errs)
	}
}

// refUnknownFields is unknownFields written the slow, obvious way, over
// encoding/json's tokens: the reference the fuzz target holds it to.
func refUnknownFields(data []byte, t reflect.Type) []FieldError {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // any number is fine: no float64 overflow
	var errs []FieldError
	var value func(t reflect.Type, path string) error
	value = func(t reflect.Type, path string) error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		for t != nil && t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		isList := t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array)
		switch tok {
		case json.Delim('{'):
			if isList {
				t = t.Elem()
			}
			var known map[string]reflect.Type
			if t != nil && t.Kind() == reflect.Struct {
				known = knownKeys(t)
			}
			seen := map[string]bool{}
			for dec.More() {
				tok, err := dec.Token()
				if err != nil {
					return err
				}
				key := tok.(string)
				p := key
				if path != "" {
					p = path + "." + key
				}
				if seen[key] {
					errs = append(errs, FieldError{p, "given twice"})
				}
				seen[key] = true
				ft, ok := known[key]
				if known != nil && !ok {
					errs = append(errs, FieldError{p, "unknown field" + suggest(key, known)})
				}
				if err := value(ft, p); err != nil {
					return err
				}
			}
			_, err = dec.Token()
			return err
		case json.Delim('['):
			var elem reflect.Type
			if isList {
				elem = t.Elem()
			}
			for i := 0; dec.More(); i++ {
				if err := value(elem, fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
			_, err = dec.Token()
			return err
		}
		return nil
	}
	if err := value(t, ""); err != nil {
		return []FieldError{{Msg: "invalid: " + err.Error()}}
	}
	return errs
}

// FuzzUnknownFields: on any valid JSON the walker says exactly what the
// reference says; on anything else it does not panic.
// Run longer with go test -fuzz FuzzUnknownFields ./internal/workload.
func FuzzUnknownFields(f *testing.F) {
	for _, seed := range []string{
		`{"kind":"pod","name":"p","spec":{"containers":[{"name":"c","image":"i","resource":{"cpu":1},"ports":{"port":22,"type":"NodePort"}}]}}`,
		`{"a":1,"a":2,"spec":{"function":{"exposure":[{"port":1},{"prot":2}],"execution":{"rootFS":"x","secure":true}}}}`,
		`{"na\u006de":"x","n\"ame":[1,2,{"x":null}],"spec":[]}`, `[]`, `{}`, `null`, `"x"`, `{"spec":{"containers":[[],{},null,"x",1.5e3]}}`,
		` { "name" : "p" , "spec" : { } } `, `{"a":`, `{"a"}`, `[1,]`, `{,}`, `{"a":1 "b":2}`, "\"\\", `{"x":tru}`,
	} {
		f.Add([]byte(seed))
	}
	typ := reflect.TypeFor[Workload]()
	f.Fuzz(func(t *testing.T, data []byte) {
		got := unknownFields(data, typ)
		if !json.Valid(data) {
			return // no panic is all: Parse walks only what decoded
		}
		if want := refUnknownFields(data, typ); !slices.Equal(got, want) {
			t.Fatalf("unknownFields(%q)\n got  %v\n want %v", data, got, want)
		}
	})
}
