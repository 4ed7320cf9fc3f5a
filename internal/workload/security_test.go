package workload

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseSecurityContext(t *testing.T) {
	doc := `{"kind":"pod","name":"p","spec":{"containers":[{"name":"c","image":"i","securityContext":{
		"runAsUser":1000,"runAsGroup":0,"readOnlyRootFilesystem":true,
		"capabilities":{"add":["NET_BIND_SERVICE"],"drop":["ALL"]}}}]}}`
	w, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	uid, gid := int64(1000), int64(0)
	want := &SecurityContext{RunAsUser: &uid, RunAsGroup: &gid, ReadOnlyRootFilesystem: true,
		Capabilities: &Capabilities{Add: []string{"NET_BIND_SERVICE"}, Drop: []string{"ALL"}}}
	if d := cmp.Diff(want, w.Spec.Containers[0].SecurityContext); d != "" {
		t.Errorf("securityContext (-want +got):\n%s", d)
	}
	if errs := validateAgainstSchema(t, []byte(doc)); len(errs) > 0 {
		t.Errorf("schema refuses a valid securityContext: %v", errs)
	}
}

func TestValidateSecurityContext(t *testing.T) {
	pod := func(sc string) string {
		return `{"kind":"pod","name":"p","spec":{"containers":[{"name":"c","image":"i","securityContext":` + sc + `}]}}`
	}
	tests := []struct {
		sc   string
		want []string // "" = valid
	}{
		{`null`, nil},
		{`{}`, nil},
		{`{"privileged":true,"runAsUser":0,"runAsGroup":2147483647}`, nil},
		{`{"capabilities":{"add":["net_admin","CAP_SYS_TIME"],"drop":["all","kill"]}}`, nil},
		{`{"capabilities":{"add":["NET_ADMIN","CAP_FOO"]}}`, []string{`spec.containers[0].securityContext.capabilities.add[1]: unknown capability "CAP_FOO"`}},
		{`{"capabilities":{"drop":["NOPE"]}}`, []string{`spec.containers[0].securityContext.capabilities.drop[0]: unknown capability "NOPE"`}},
		{`{"capabilities":{"add":["ALL"]}}`, []string{`spec.containers[0].securityContext.capabilities.add[0]: ALL may only be dropped`}},
		{`{"runAsUser":-1,"runAsGroup":2147483648}`, []string{
			"spec.containers[0].securityContext.runAsUser: must be between 0 and 2147483647",
			"spec.containers[0].securityContext.runAsGroup: must be between 0 and 2147483647"}},
		{`{"runAsUser":"root"}`, []string{"spec.containers.securityContext.runAsUser: must be an integer"}},
		{`{"capabilities":{"add":[` + strings.Repeat(`"KILL",`, 42) + `"KILL"]}}`, []string{"capabilities.add: at most 42 capabilities"}},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(pod(tt.sc)))
		if tt.want == nil {
			if err != nil {
				t.Errorf("%s: %v", tt.sc, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: accepted", tt.sc)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", tt.sc, err, w)
			}
		}
	}
}

func TestEffectiveCapabilities(t *testing.T) {
	tests := []struct {
		name string
		sc   *SecurityContext
		want []string
	}{
		{"none", nil, DefaultCapabilities},
		{"empty", &SecurityContext{}, DefaultCapabilities},
		{"privileged", &SecurityContext{Privileged: true, Capabilities: &Capabilities{Drop: []string{"ALL"}}}, AllCapabilities},
		{"drop all add one", &SecurityContext{Capabilities: &Capabilities{Drop: []string{"all"}, Add: []string{"net_bind_service"}}},
			[]string{"CAP_NET_BIND_SERVICE"}},
		{"drop some add some", &SecurityContext{Capabilities: &Capabilities{Drop: []string{"CAP_CHOWN", "MKNOD", "KILL"}, Add: []string{"NET_ADMIN", "kill"}}},
			[]string{"CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
				"CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SYS_CHROOT", "CAP_AUDIT_WRITE", "CAP_SETFCAP"}},
	}
	for _, tt := range tests {
		got := tt.sc.EffectiveCapabilities()
		want := slices.Clone(tt.want)
		slices.SortFunc(want, func(a, b string) int { return slices.Index(AllCapabilities, a) - slices.Index(AllCapabilities, b) })
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, d)
		}
	}
}

func TestNeedsPrivilege(t *testing.T) {
	tests := []struct {
		sc   *SecurityContext
		want string
	}{
		{nil, ""},
		{&SecurityContext{ReadOnlyRootFilesystem: true}, ""},
		{&SecurityContext{Capabilities: &Capabilities{Drop: []string{"ALL"}, Add: []string{"NET_BIND_SERVICE", "cap_kill"}}}, ""},
		{&SecurityContext{Privileged: true}, "spec.containers[2].securityContext.privileged"},
		{&SecurityContext{Capabilities: &Capabilities{Add: []string{"KILL", "SYS_ADMIN"}}}, "spec.containers[2].securityContext.capabilities.add[1]"},
	}
	for _, tt := range tests {
		if got := (Container{SecurityContext: tt.sc}).NeedsPrivilege(2); got != tt.want {
			t.Errorf("NeedsPrivilege(%+v) = %q, want %q", tt.sc, got, tt.want)
		}
	}
	if len(AllCapabilities) != 41 {
		t.Errorf("%d capabilities, want 41 (CAP_LAST_CAP is CAP_CHECKPOINT_RESTORE = 40)", len(AllCapabilities))
	}
}
