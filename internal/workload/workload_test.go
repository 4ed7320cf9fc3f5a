package workload

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"sigs.k8s.io/yaml"
)

func TestParseDefaultsAndAliases(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Workload
	}{
		{
			name: "rik pod",
			in:   `{"api_version":"v0","kind":"pods","name":"alpine","replicas":1,"spec":{"containers":[{"name":"alpine","image":"alpine:latest"}]}}`,
			want: Workload{APIVersion: "v0", Kind: KindPod, Name: "alpine", Replicas: 1, RestartPolicy: RestartAlways,
				Spec: Spec{Containers: []Container{{Name: "alpine", Image: "alpine:latest"}}}},
		},
		{
			name: "rik function with single exposure object and RIK's ignored fields",
			in:   `{"api_version":"v0","kind":"Function","name":"fc-function","spec":{"containers":[],"function":{"execution":{"rootfs":"https://example.com/rootfs.ext4","secure":false},"exposure":{"port":8080,"targetPort":80,"type":"NodePort"}}}}`,
			want: Workload{APIVersion: "v0", Kind: KindFunction, Name: "fc-function", Replicas: 1, RestartPolicy: RestartAlways,
				Spec: Spec{Containers: []Container{}, Function: &Function{
					Execution: Execution{Rootfs: "https://example.com/rootfs.ext4", VCPUs: 1, Memory: 128},
					Exposure:  PortList{{Port: 8080, TargetPort: 80, Protocol: "TCP"}},
				}}},
		},
		{
			name: "apiVersion camel, defaults, target_port alias, port only",
			in: `{"apiVersion":"v1","kind":"POD","name":"web","restartPolicy":"onfailure","spec":{"containers":[
				{"name":"a","image":"busybox","ports":{"port":8080,"target_port":80}},
				{"name":"b","image":"busybox","ports":[{"port":9090,"protocol":"udp"},{"targetPort":53}]}]}}`,
			want: Workload{APIVersion: "v1", Kind: KindPod, Name: "web", Replicas: 1, RestartPolicy: RestartOnFailure,
				Spec: Spec{Containers: []Container{
					{Name: "a", Image: "busybox", Ports: PortList{{Port: 8080, TargetPort: 80, Protocol: "TCP"}}},
					{Name: "b", Image: "busybox", Ports: PortList{{Port: 9090, TargetPort: 9090, Protocol: "UDP"}, {TargetPort: 53, Protocol: "TCP"}}},
				}}},
		},
		{
			name: "no apiVersion gets v1, explicit replicas 0 kept",
			in:   `{"kind":"function","name":"f","replicas":0,"spec":{"function":{"execution":{"rootfs":"file:///r.ext4","vcpus":2,"memory":256,"sha256":"` + strings.Repeat("AB", 32) + `"}}}}`,
			want: Workload{APIVersion: "v1", Kind: KindFunction, Name: "f", Replicas: 0, RestartPolicy: RestartAlways,
				Spec: Spec{Function: &Function{Execution: Execution{Rootfs: "file:///r.ext4", VCPUs: 2, Memory: 256, SHA256: strings.Repeat("ab", 32)}}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("Parse (-want +got):\n%s", d)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	pod := func(container string) string {
		return `{"kind":"pod","name":"p","spec":{"containers":[` + container + `]}}`
	}
	fn := func(execution, exposure string) string {
		return `{"kind":"function","name":"f","spec":{"function":{"execution":` + execution + `,"exposure":` + exposure + `}}}`
	}
	tests := []struct {
		name string
		in   string
		want []string // every one must be in the error
	}{
		{"not json", `{"kind":`, []string{"invalid JSON"}},
		{"array", `[1]`, []string{"(root): must be an object"}},
		{"type error path", pod(`{"name":"c","image":3}`), []string{"spec.containers.image: must be a string, got number"}},
		{"type error in port", pod(`{"name":"c","image":"i","ports":{"port":"80"}}`), []string{"spec.containers.ports.port: must be an integer"}},
		{"too big", `{"name":"` + strings.Repeat("a", MaxDefinitionBytes) + `"}`, []string{"larger than"}},
		{"example from brief", `{"kind":"pod","name":"Bad_Name","spec":{"containers":[{"name":"c"}]}}`,
			[]string{"spec.containers[0].image: required", "name: must be a DNS label (lowercase a-z0-9 and '-', at most 63 chars)"}},
		{"missing kind", `{"name":"x","spec":{}}`, []string{"kind: required"}},
		{"bad kind", `{"kind":"vm","name":"x","spec":{}}`, []string{`kind: must be pod or function, got "vm"`}},
		{"bad apiVersion", `{"apiVersion":"v9","kind":"pod","name":"x","spec":{"containers":[{"name":"c","image":"i"}]}}`, []string{"apiVersion: must be v1"}},
		{"name with slash", `{"kind":"pod","name":"a/../b","spec":{"containers":[{"name":"c","image":"i"}]}}`, []string{"name: must be a DNS label"}},
		{"name too long for instances", `{"kind":"pod","name":"` + strings.Repeat("a", 60) + `","spec":{"containers":[{"name":"c","image":"i"}]}}`, []string{"name: at most 57 chars"}},
		{"replicas", `{"kind":"pod","name":"x","replicas":1001,"spec":{"containers":[{"name":"c","image":"i"}]}}`, []string{"replicas: must be between 0 and 1000"}},
		{"negative replicas", `{"kind":"pod","name":"x","replicas":-1,"spec":{"containers":[{"name":"c","image":"i"}]}}`, []string{"replicas: must be between 0 and 1000"}},
		{"restart policy", `{"kind":"pod","name":"x","restartPolicy":"Sometimes","spec":{"containers":[{"name":"c","image":"i"}]}}`, []string{"restartPolicy: must be Never, OnFailure or Always"}},
		{"pod without containers", `{"kind":"pod","name":"x","spec":{"containers":[]}}`, []string{"spec.containers: at least one container required"}},
		{"pod with function", `{"kind":"pod","name":"x","spec":{"containers":[{"name":"c","image":"i"}],"function":{"execution":{"rootfs":"http://x/r"}}}}`, []string{"spec.function: not allowed for a pod"}},
		{"duplicate containers", pod(`{"name":"c","image":"i"},{"name":"c","image":"j"}`), []string{`spec.containers[1].name: duplicate container name "c"`}},
		{"container name uppercase", pod(`{"name":"C","image":"i"}`), []string{"spec.containers[0].name: must be a DNS label"}},
		{"image with space", pod(`{"name":"c","image":"alpine latest"}`), []string{"spec.containers[0].image: must not contain spaces"}},
		{"image too long", pod(`{"name":"c","image":"` + strings.Repeat("i", MaxImageLen+1) + `"}`), []string{"spec.containers[0].image: at most 512 chars"}},
		{"env", pod(`{"name":"c","image":"i","env":[{"name":"","value":"x"},{"name":"A=B"},{"name":"OK","value":"a\u0000b"}]}`),
			[]string{"spec.containers[0].env[0].name: required", "spec.containers[0].env[1].name: must not contain '='", "spec.containers[0].env[2].value: must not contain NUL"}},
		{"args", pod(`{"name":"c","image":"i","command":["sh"],"args":["ok","` + strings.Repeat("a", MaxArgLen+1) + `"]}`), []string{"spec.containers[0].args[1]: at most 4096 chars"}},
		{"ports", pod(`{"name":"c","image":"i","ports":[{"port":70000,"targetPort":80},{"port":-1,"targetPort":0},{"port":1,"protocol":"SCTP"}]}`),
			[]string{"spec.containers[0].ports[0].port: must be between 1 and 65535", "spec.containers[0].ports[1].port: must be between",
				"spec.containers[0].ports[1].targetPort: must be between 1 and 65535", `spec.containers[0].ports[2].protocol: must be TCP or UDP, got "SCTP"`}},
		{"duplicate host port across containers", pod(`{"name":"a","image":"i","ports":{"port":80}},{"name":"b","image":"i","ports":[{"port":80,"targetPort":81}]}`),
			[]string{"spec.containers[1].ports[0].port: host port 80/TCP used twice"}},
		{"resources", pod(`{"name":"c","image":"i","resources":{"cpu":-1,"memory":-5}}`),
			[]string{"spec.containers[0].resources.cpu: must be between 0", "spec.containers[0].resources.memory: must be between 0"}},
		{"function without function", `{"kind":"function","name":"f","spec":{}}`, []string{"spec.function.execution.rootfs: required"}},
		{"function with containers", `{"kind":"function","name":"f","spec":{"containers":[{"name":"c","image":"i"}],"function":{"execution":{"rootfs":"http://x/r"}}}}`,
			[]string{"spec.containers: not allowed for a function"}},
		{"rootfs scheme", fn(`{"rootfs":"ftp://x/r"}`, `[]`), []string{"spec.function.execution.rootfs: must be an http://, https:// or file:// URL"}},
		{"rootfs path", fn(`{"rootfs":"/var/r.ext4"}`, `[]`), []string{"spec.function.execution.rootfs: must be an http://"}},
		{"vm limits", fn(`{"rootfs":"http://x/r","vcpus":33,"memory":8,"sha256":"xyz","entrypoint":"init","kernelArgs":"a\nb"}`, `null`),
			[]string{"spec.function.execution.vcpus: must be between 1 and 32", "spec.function.execution.memory: must be between 16 and 65536 MiB",
				"spec.function.execution.sha256: must be 64 hex digits", "spec.function.execution.entrypoint: must start with an absolute path",
				"spec.function.execution.kernelArgs: must not contain control characters"}},
		{"exposure", fn(`{"rootfs":"http://x/r"}`, `[{"port":80},{"port":80}]`), []string{"spec.function.exposure[1].port: host port 80/TCP used twice"}},
		{"function args and env", fn(`{"rootfs":"http://x/r","entrypoint":"/bin/app\targ","args":["ok","a\u0000b"],"env":[{"name":"","value":"x"},{"name":"A=B"}]}`, `null`),
			[]string{"spec.function.execution.entrypoint: must not contain control characters", "spec.function.execution.args[1]: must not contain NUL",
				"spec.function.execution.env[0].name: required", "spec.function.execution.env[1].name: must not contain '='"}},
		{"function entrypoint relative", fn(`{"rootfs":"http://x/r","entrypoint":"app -v"}`, `null`), []string{"spec.function.execution.entrypoint: must start with an absolute path"}},
		{"function too many args", fn(`{"rootfs":"http://x/r","entrypoint":"/bin/app -v","args":[`+strings.Repeat(`"a",`, MaxArgs)+`"a"]}`, `null`),
			[]string{"spec.function.execution.args: at most 256 elements"}},
		{"function args and env too large", fn(`{"rootfs":"http://x/r","env":[`+strings.Repeat(`{"name":"V","value":"`+strings.Repeat("v", MaxArgLen)+`"},`, 16)+`{"name":"W"}]}`, `null`),
			[]string{"spec.function.execution: args and env: at most 65536 bytes together"}},
		{"network mode", `{"kind":"function","name":"f","spec":{"function":{"execution":{"rootfs":"http://x/r"},"network":"host"}}}`,
			[]string{`spec.function.network: must be nat or bridge, got "host"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatal("Parse: no error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Errorf("error %T is not a *ValidationError", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\n does not contain %q", err, w)
				}
			}
		})
	}
}

func TestValidationErrorListsEveryProblem(t *testing.T) {
	_, err := Parse([]byte(`{"kind":"pod","name":"Bad_Name","spec":{"containers":[{"name":"c"}]}}`))
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("got %v, want *ValidationError", err)
	}
	got := make([]string, len(ve.Errors))
	for i, e := range ve.Errors {
		got[i] = e.Field
	}
	if want := []string{"name", "spec.containers[0].image"}; !slices.Equal(got, want) {
		t.Errorf("fields = %q, want %q", got, want)
	}
}

func TestParseKind(t *testing.T) {
	tests := []struct {
		in      string
		want    Kind
		wantErr bool
	}{
		{"pod", KindPod, false}, {"pods", KindPod, false}, {"Pod", KindPod, false}, {"PODS", KindPod, false},
		{"function", KindFunction, false}, {"Function", KindFunction, false}, {"functions", KindFunction, false},
		{"", "", true}, {"vm", "", true}, {"pod s", "", true},
	}
	for _, tt := range tests {
		got, err := ParseKind(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseKind(%q) = %q, %v; want %q, err=%v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseKind(%q) error does not wrap ErrInvalid", tt.in)
		}
	}
}

func TestKeySegment(t *testing.T) {
	for k, want := range map[Kind]string{KindPod: "pods", KindFunction: "function", "x": ""} {
		if got := k.KeySegment(); got != want {
			t.Errorf("%q.KeySegment() = %q, want %q", k, got, want)
		}
	}
}

func TestValidName(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"a", true}, {"web-1", true}, {"2-distro", true}, {strings.Repeat("a", 63), true},
		{"", false}, {strings.Repeat("a", 64), false}, {"-a", false}, {"a-", false}, {"A", false},
		{"a b", false}, {"a/b", false}, {"..", false}, {"a.b", false}, {"a_b", false}, {"é", false},
	}
	for _, tt := range tests {
		err := ValidName(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ValidName(%q) = %v, want ok=%v", tt.in, err, tt.ok)
		}
		if err != nil && (!errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), "name: must be a DNS label")) {
			t.Errorf("ValidName(%q) error = %q", tt.in, err)
		}
	}
}

func TestHostPortsAndRequests(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		wantPorts []PortMapping
		wantCPU   int64
		wantMem   int64
	}{
		{
			name: "pod",
			in: `{"kind":"pod","name":"p","spec":{"containers":[
				{"name":"a","image":"i","ports":[{"port":8080,"targetPort":80},{"targetPort":9000}],"resources":{"cpu":250,"memory":64}},
				{"name":"b","image":"i","ports":{"port":53,"protocol":"UDP"},"resources":{"cpu":100}},
				{"name":"c","image":"i"}]}}`,
			wantPorts: []PortMapping{{Port: 8080, TargetPort: 80, Protocol: "TCP"}, {Port: 53, TargetPort: 53, Protocol: "UDP"}},
			wantCPU:   350, wantMem: 64,
		},
		{
			name:      "function defaults",
			in:        `{"kind":"function","name":"f","spec":{"function":{"execution":{"rootfs":"http://x/r"},"exposure":{"port":8080,"targetPort":80}}}}`,
			wantPorts: []PortMapping{{Port: 8080, TargetPort: 80, Protocol: "TCP"}},
			wantCPU:   1000, wantMem: 128,
		},
		{
			name:    "function sized, not exposed",
			in:      `{"kind":"function","name":"f","spec":{"function":{"execution":{"rootfs":"http://x/r","vcpus":4,"memory":2048},"exposure":{"targetPort":80}}}}`,
			wantCPU: 4000, wantMem: 2048,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.wantPorts, w.HostPorts()); d != "" {
				t.Errorf("HostPorts (-want +got):\n%s", d)
			}
			cpu, mem := w.Requests()
			if cpu != tt.wantCPU || mem != tt.wantMem {
				t.Errorf("Requests() = %d, %d; want %d, %d", cpu, mem, tt.wantCPU, tt.wantMem)
			}
		})
	}
}

func TestHostPortsWithoutDefaults(t *testing.T) {
	w := Workload{Kind: KindPod, Spec: Spec{Containers: []Container{{Ports: PortList{{Port: 80}, {Port: 53, Protocol: "udp"}, {TargetPort: 9}}}}}}
	want := []PortMapping{{Port: 80, TargetPort: 80, Protocol: "TCP"}, {Port: 53, TargetPort: 53, Protocol: "UDP"}}
	if d := cmp.Diff(want, w.HostPorts()); d != "" {
		t.Errorf("HostPorts (-want +got):\n%s", d)
	}
}

func BenchmarkParse(b *testing.B) {
	data, err := os.ReadFile(filepath.Join("..", "..", "examples", "pod-httpd.json"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	w, err := Parse([]byte(`{"kind":"pod","name":"p","replicas":0,"spec":{"containers":[{"name":"a","image":"i","ports":{"port":1}}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse(Marshal(w)): %v", err)
	}
	if d := cmp.Diff(w, again); d != "" {
		t.Errorf("round trip (-want +got):\n%s", d)
	}
}

// readExample returns an example file as JSON (YAML files are converted).
func readExample(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml") {
		if b, err = yaml.YAMLToJSON(b); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	return b
}

func exampleFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, pat := range []string{"*.json", "*.yaml", "*.yml"} {
		m, err := filepath.Glob(filepath.Join("..", "..", "examples", pat))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 5 {
		t.Fatalf("found %d example files, want at least 5", len(files))
	}
	return files
}

func TestExamplesParse(t *testing.T) {
	for _, f := range exampleFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			w, err := Parse(readExample(t, f))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if w.Kind != KindPod && w.Kind != KindFunction {
				t.Errorf("kind = %q", w.Kind)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"api_version":"v0","kind":"pods","name":"alpine","replicas":1,"spec":{"containers":[{"name":"alpine","image":"alpine:latest"}]}}`))
	f.Add([]byte(`{"kind":"Function","name":"f","spec":{"function":{"execution":{"rootfs":"http://x/r"},"exposure":{"port":8080,"target_port":80}}}}`))
	f.Add([]byte(`{"kind":"pod","name":"p","spec":{"containers":[{"name":"c","image":"i","ports":[{"port":1},{"port":1}],"env":[{"name":"A"}]}]}}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"spec":{"containers":null,"function":null}}`))
	f.Add([]byte(`{"kind":"pod","name":"p","spec":{"containers":[{"name":"c","image":"i","resource":{"cpu":1},"ports":{"port":22,"type":"NodePort"}}]}}`))
	f.Add([]byte(`{"kind":"function","name":"f","spec":{"function":{"execution":{"rootfs":"file:///etc/shadow","secure":true,"kernelArgs":"\"rik.ip\"=x"}}}}`))
	f.Add([]byte(`{"kind":"function","name":"f","name":"g","spec":{"function":{"execution":{"rootfs":"http://0xa9fea9fe/"}}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		// Strict: the same definition with one more field is refused, at
		// that field's path.
		if _, err := Parse(append([]byte(`{"zz_unknown":0,`), bytes.TrimPrefix(bytes.TrimSpace(data), []byte("{"))...)); err == nil ||
			!strings.Contains(err.Error(), "zz_unknown: unknown field") {
			t.Fatalf("Parse with an unknown field = %v for %s", err, data)
		}
		// Admission never panics, and refuses with field paths only.
		if _, err := Admit(w, DefaultPolicy()); err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Admit error %v is not a *ValidationError", err)
			}
		}
		// A valid definition survives a round trip unchanged (empty lists
		// may come back nil: omitempty).
		b, err := json.Marshal(w)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		again, err := Parse(b)
		if err != nil {
			t.Fatalf("Parse(Marshal(w)) = %v for %s", err, b)
		}
		if d := cmp.Diff(w, again, cmpopts.EquateEmpty()); d != "" {
			t.Fatalf("round trip (-want +got):\n%s", d)
		}
	})
}

func TestValidInstanceID(t *testing.T) {
	for _, ok := range []string{"a", "0f8fad5b-d9cb-469f-a165-70867728950e", "A_b-9", strings.Repeat("x", MaxInstanceIDLen)} {
		if err := ValidInstanceID(ok); err != nil {
			t.Errorf("ValidInstanceID(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", "_a", "a/b", "..", "a.b", "a b", "é", strings.Repeat("x", MaxInstanceIDLen+1)} {
		err := ValidInstanceID(bad)
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), "instance_id: ") {
			t.Errorf("ValidInstanceID(%q) = %v, want an instance_id error", bad, err)
		}
	}
}
