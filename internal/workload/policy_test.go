package workload

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustParse(t *testing.T, in string) Workload {
	t.Helper()
	w, err := Parse([]byte(in))
	if err != nil {
		t.Fatalf("Parse(%s): %v", in, err)
	}
	return w
}

func TestAdmitRefuses(t *testing.T) {
	pod := func(ports string) string {
		return `{"kind":"pod","name":"p","spec":{"containers":[{"name":"c","image":"i","ports":` + ports + `}]}}`
	}
	fn := func(rootfs, exposure string) string {
		return `{"kind":"function","name":"f","spec":{"function":{"execution":{"rootfs":"` + rootfs + `"},"exposure":` + exposure + `}}}`
	}
	policy := DefaultPolicy()
	policy.ReservedPorts = append(policy.ReservedPorts, 9000)
	tests := []struct {
		name string
		in   string
		want []FieldError
	}{
		{"ssh", pod(`{"port":22,"targetPort":80}`), []FieldError{{"spec.containers[0].ports[0].port", "host port 22 is below 1024 (system ports)"}}},
		{"http", pod(`[{"port":8080},{"port":80}]`), []FieldError{{"spec.containers[0].ports[1].port", "host port 80 is below 1024 (system ports)"}}},
		{"rik workers", pod(`{"port":4995}`), []FieldError{{"spec.containers[0].ports[0].port", "host port 4995 is used by rik"}}},
		{"rik api", fn("http://x/r", `[{"port":5000,"targetPort":80}]`), []FieldError{{"spec.function.exposure[0].port", "host port 5000 is used by rik"}}},
		{"reserved", pod(`{"port":9000,"protocol":"UDP"}`), []FieldError{{"spec.containers[0].ports[0].port", "host port 9000 is reserved"}}},
		{"shadow", fn("file:///etc/shadow", `[]`), []FieldError{{"spec.function.execution.rootfs", "file:// only under /var/lib/rik/rootfs on this cluster"}}},
		{"dot dot", fn("file:///var/lib/rik/rootfs/../../../etc/shadow", `[]`), []FieldError{{"spec.function.execution.rootfs", "file:// only under /var/lib/rik/rootfs on this cluster"}}},
		{"encoded dot dot", fn("file:///var/lib/rik/rootfs/%2e%2e/x", `[]`), []FieldError{{"spec.function.execution.rootfs", "file:// only under /var/lib/rik/rootfs on this cluster"}}},
		{"sibling with the same prefix", fn("file:///var/lib/rik/rootfs2/r.ext4", `[]`), []FieldError{{"spec.function.execution.rootfs", "file:// only under /var/lib/rik/rootfs on this cluster"}}},
		{"the directory itself", fn("file:///var/lib/rik/rootfs/", `[]`), []FieldError{{"spec.function.execution.rootfs", "file:// only under /var/lib/rik/rootfs on this cluster"}}},
		{"another host", fn("file://server/var/lib/rik/rootfs/r.ext4", `[]`), []FieldError{{"spec.function.execution.rootfs", "a file:// URL must name an absolute path on the node (file:///dir/file)"}}},
		{"metadata", fn("http://169.254.169.254/latest/meta-data/", `[]`), []FieldError{{"spec.function.execution.rootfs", "169.254.169.254 is a link-local address: not allowed"}}},
		{"metadata in hex", fn("http://0xa9fea9fe/", `[]`), []FieldError{{"spec.function.execution.rootfs", "0xa9fea9fe is a link-local address: not allowed"}}},
		{"metadata as a number", fn("https://2852039166:443/", `[]`), []FieldError{{"spec.function.execution.rootfs", "2852039166 is a link-local address: not allowed"}}},
		{"metadata in octal", fn("http://0251.0376.0251.0376/", `[]`), []FieldError{{"spec.function.execution.rootfs", "0251.0376.0251.0376 is a link-local address: not allowed"}}},
		{"metadata mapped in IPv6", fn("http://[::ffff:169.254.169.254]/", `[]`), []FieldError{{"spec.function.execution.rootfs", "::ffff:169.254.169.254 is a link-local address: not allowed"}}},
		{"IPv6 link-local", fn("http://[fe80::1%25eth0]:8080/r", `[]`), []FieldError{{"spec.function.execution.rootfs", "fe80::1%eth0 is a link-local address: not allowed"}}},
		{"metadata name", fn("http://Metadata.Google.Internal./computeMetadata/v1/", `[]`), []FieldError{{"spec.function.execution.rootfs", "Metadata.Google.Internal. is a cloud metadata name: not allowed"}}},
		{"alibaba metadata", fn("http://100.100.100.200/latest/", `[]`), []FieldError{{"spec.function.execution.rootfs", "100.100.100.200 is a cloud metadata address: not allowed"}}},
		{"unspecified", fn("http://0.0.0.0:8080/r", `[]`), []FieldError{{"spec.function.execution.rootfs", "0.0.0.0 is an unspecified address: not allowed"}}},
		{"every problem", fn("file:///etc/passwd", `[{"port":22},{"port":4996}]`), []FieldError{
			{"spec.function.exposure[0].port", "host port 22 is below 1024 (system ports)"},
			{"spec.function.exposure[1].port", "host port 4996 is used by rik"},
			{"spec.function.execution.rootfs", "file:// only under /var/lib/rik/rootfs on this cluster"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Admit(mustParse(t, tt.in), policy)
			var ve *ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Admit = %v, want a *ValidationError wrapping ErrInvalid", err)
			}
			if d := cmp.Diff(tt.want, ve.Errors); d != "" {
				t.Errorf("errors (-want +got):\n%s", d)
			}
		})
	}
}

func TestAdmitAccepts(t *testing.T) {
	policy := Policy{RootfsDirs: []string{"/srv/rootfs/", "/var/lib/rik/rootfs"}}
	for _, in := range []string{
		`{"kind":"pod","name":"p","spec":{"containers":[{"name":"c","image":"i","ports":[{"port":1024},{"port":65535},{"targetPort":22},{"port":0,"targetPort":4995}]}]}}`,
		`{"kind":"function","name":"f","spec":{"function":{"execution":{"rootfs":"file:///srv/rootfs/a/b.ext4"}}}}`,
		`{"kind":"function","name":"f","spec":{"function":{"execution":{"rootfs":"file://localhost/var/lib/rik/rootfs/r.tar.gz"}}}}`,
		`{"kind":"function","name":"f","spec":{"function":{"execution":{"rootfs":"file:///var/lib/rik/rootfs/x/../r.ext4"}}}}`,
		// The node judges loopback, private and named hosts once resolved.
		`{"kind":"function","name":"f","spec":{"function":{"execution":{"rootfs":"http://127.0.0.1:8000/r"}}}}`,
		`{"kind":"function","name":"f","spec":{"function":{"execution":{"rootfs":"https://10.0.0.1/r"}}}}`,
		`{"kind":"function","name":"f","spec":{"function":{"execution":{"rootfs":"https://images.example.com/r"}}}}`,
		`{"kind":"function","name":"f","spec":{"function":{"execution":{"rootfs":"https://[2001:db8::1]/r"}}}}`,
	} {
		if _, err := Admit(mustParse(t, in), policy); err != nil {
			t.Errorf("Admit(%s): %v", in, err)
		}
	}
	// No directory: no file:// at all.
	_, err := Admit(mustParse(t, `{"kind":"function","name":"f","spec":{"function":{"execution":{"rootfs":"file:///var/lib/rik/rootfs/r"}}}}`), Policy{})
	if err == nil || !strings.Contains(err.Error(), "spec.function.execution.rootfs: file:// is not allowed on this cluster") {
		t.Errorf("Admit without rootfs dirs = %v", err)
	}
}

func TestAdmitDefaultResources(t *testing.T) {
	in := mustParse(t, `{"kind":"pod","name":"p","spec":{"containers":[
		{"name":"none","image":"i"},
		{"name":"cpu","image":"i","resources":{"cpu":250}},
		{"name":"both","image":"i","resources":{"cpu":50,"memory":16}}]}}`)
	before := mustParse(t, `{"kind":"pod","name":"p","spec":{"containers":[
		{"name":"none","image":"i"},
		{"name":"cpu","image":"i","resources":{"cpu":250}},
		{"name":"both","image":"i","resources":{"cpu":50,"memory":16}}]}}`)
	got, err := Admit(in, DefaultPolicy())
	if err != nil {
		t.Fatal(err)
	}
	want := []*Resources{{CPU: 100, Memory: 128}, {CPU: 250, Memory: 128}, {CPU: 50, Memory: 16}}
	for i, c := range got.Spec.Containers {
		if d := cmp.Diff(want[i], c.Resources); d != "" {
			t.Errorf("container %s resources (-want +got):\n%s", c.Name, d)
		}
	}
	if cpu, mem := got.Requests(); cpu != 400 || mem != 272 {
		t.Errorf("Requests() = %d, %d; want 400, 272 (placement counts the defaults)", cpu, mem)
	}
	if d := cmp.Diff(before, in); d != "" {
		t.Errorf("Admit modified its argument (-before +after):\n%s", d)
	}
	// A policy without defaults leaves resources unset.
	got, err = Admit(in, Policy{})
	if err != nil || got.Spec.Containers[0].Resources != nil {
		t.Errorf("Admit with no defaults: %v, %+v", err, got.Spec.Containers[0].Resources)
	}
}

func TestReservedKernelArgs(t *testing.T) {
	tests := []struct {
		args string
		want string // the reserved parameter, "" if none
	}{
		{"quiet", ""},
		{"quiet loglevel=7 mitigations=off", ""},
		{`foo="bar baz" initcall_debug rootdelay=1 consoleblank=0`, ""},
		{"rik.ip=10.0.0.1/30", "rik.ip=10.0.0.1/30"},
		{"quiet rik.init=/bin/sh", "rik.init=/bin/sh"},
		{"rik.anything", "rik.anything"},
		{`"rik.ip"="10.0.0.1/30"`, `"rik.ip"="10.0.0.1/30"`},
		{`"rik.ip=10.0.0.1/30"`, `"rik.ip=10.0.0.1/30"`},
		{`x="a rik.init=/bin/sh"`, `rik.init=/bin/sh"`},
		{"init=/bin/sh", "init=/bin/sh"},
		{"rdinit=/x", "rdinit=/x"},
		{"root=/dev/vdb", "root=/dev/vdb"},
		{"console=tty0", "console=tty0"},
		{"panic=0", "panic=0"},
		{"reboot=t", "reboot=t"},
		{"tsc-early-khz=1000", "tsc-early-khz=1000"},
		{"tsc_early_khz=1000", "tsc_early_khz=1000"},
		{"quiet -- /bin/sh", "--"},
	}
	for _, tt := range tests {
		got, ok := ReservedKernelArg(tt.args)
		want := strings.ReplaceAll(tt.want, `"`, "")
		if ok != (tt.want != "") || got != want {
			t.Errorf("ReservedKernelArg(%q) = %q, %v; want %q", tt.args, got, ok, want)
		}
		// Validate reports it at its path.
		in := `{"kind":"function","name":"f","spec":{"function":{"execution":{"rootfs":"http://x/r","kernelArgs":` + jsonString(tt.args) + `}}}}`
		_, err := Parse([]byte(in))
		if tt.want == "" {
			if err != nil {
				t.Errorf("Parse with kernelArgs %q: %v", tt.args, err)
			}
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), "spec.function.execution.kernelArgs: ") || !strings.Contains(err.Error(), "is reserved (rik sets it)") {
			t.Errorf("Parse with kernelArgs %q = %v", tt.args, err)
		}
	}
}

func jsonString(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"`
}

func TestRefusedFetchAddr(t *testing.T) {
	tests := []struct {
		addr string
		want string
	}{
		{"169.254.169.254", "a link-local address"}, {"169.254.170.2", "a link-local address"},
		{"fe80::1", "a link-local address"}, {"ff02::1", "a link-local address"},
		{"224.0.0.1", "a link-local address"}, {"239.1.2.3", "a multicast address"}, {"ff05::2", "a multicast address"},
		{"0.0.0.0", "an unspecified address"}, {"0.1.2.3", "an unspecified address"}, {"::", "an unspecified address"},
		{"100.100.100.200", "a cloud metadata address"}, {"fd00:ec2::254", "a cloud metadata address"},
		{"::ffff:169.254.169.254", "a link-local address"}, {"64:ff9b::a9fe:a9fe", "a link-local address"},
		{"127.0.0.1", ""}, {"::1", ""}, {"10.1.2.3", ""}, {"172.31.0.2", ""}, {"192.168.1.1", ""},
		{"100.100.100.201", ""}, {"8.8.8.8", ""}, {"2001:db8::1", ""},
	}
	for _, tt := range tests {
		if got := RefusedFetchAddr(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("RefusedFetchAddr(%s) = %q, want %q", tt.addr, got, tt.want)
		}
	}
}

func TestParseLooseIPv4(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" = not an address
	}{
		{"169.254.169.254", "169.254.169.254"}, {"2852039166", "169.254.169.254"}, {"0xa9fea9fe", "169.254.169.254"},
		{"0XA9FEA9FE", "169.254.169.254"}, {"0251.0376.0251.0376", "169.254.169.254"}, {"169.254.43518", "169.254.169.254"},
		{"169.16689662", "169.254.169.254"}, {"0x7f.1", "127.0.0.1"}, {"0", "0.0.0.0"}, {"010.0.0.1", "8.0.0.1"},
		{"256.0.0.1", ""}, {"1.2.3.4.5", ""}, {"1.2.3.256", ""}, {"1.2.65536", ""}, {"4294967296", ""},
		{"08", ""}, {"0x", ""}, {"1..2", ""}, {"example.com", ""}, {"", ""}, {"-1", ""}, {"+1", ""}, {"1_0", ""},
	}
	for _, tt := range tests {
		a, ok := parseLooseIPv4(tt.in)
		got := ""
		if ok {
			got = a.String()
		}
		if got != tt.want {
			t.Errorf("parseLooseIPv4(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFileUnder(t *testing.T) {
	dirs := []string{"/var/lib/rik/rootfs", "relative/ignored", "/srv/images/"}
	tests := []struct {
		path, dir, rel string
	}{
		{"/var/lib/rik/rootfs/a.ext4", "/var/lib/rik/rootfs", "a.ext4"},
		{"/var/lib/rik/rootfs/x/../y/b.ext4", "/var/lib/rik/rootfs", "y/b.ext4"},
		{"/srv/images/c", "/srv/images", "c"},
		{"/var/lib/rik/rootfs", "", ""},
		{"/var/lib/rik/rootfs/..", "", ""},
		{"/var/lib/rik/rootfs2/a", "", ""},
		{"/var/lib/rik/rootfs/../../../etc/shadow", "", ""},
		{"relative/ignored/a", "", ""},
		{"/etc/shadow", "", ""},
	}
	for _, tt := range tests {
		dir, rel, ok := FileUnder(tt.path, dirs)
		if ok != (tt.dir != "") || dir != tt.dir || rel != tt.rel {
			t.Errorf("FileUnder(%q) = %q, %q, %v; want %q, %q", tt.path, dir, rel, ok, tt.dir, tt.rel)
		}
	}
	if dir, rel, ok := FileUnder("/etc/shadow", []string{"/"}); !ok || dir != "/" || rel != "etc/shadow" {
		t.Errorf("FileUnder under / = %q, %q, %v", dir, rel, ok)
	}
}

func TestRootfsFilePath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"file:///var/lib/rik/rootfs/a.ext4", "/var/lib/rik/rootfs/a.ext4"},
		{"FILE:///a/../b", "/b"},
		{"file://localhost/a", "/a"},
		{"file:///a/%2e%2e/%2e%2e/etc/shadow", "/etc/shadow"},
		{"file://host/a", ""}, {"file:a", ""}, {"http://x/a", ""}, {"file://", ""}, {"%zz", ""},
	}
	for _, tt := range tests {
		got, ok := RootfsFilePath(tt.in)
		if ok != (tt.want != "") || got != tt.want {
			t.Errorf("RootfsFilePath(%q) = %q, %v; want %q", tt.in, got, ok, tt.want)
		}
	}
}

func TestHostPortRefused(t *testing.T) {
	p := Policy{ReservedPorts: []int{22, 8443}}
	for port, want := range map[int]string{
		1: "host port 1 is below 1024 (system ports)", 1023: "host port 1023 is below 1024 (system ports)",
		1024: "", 4995: "host port 4995 is used by rik", 4996: "host port 4996 is used by rik",
		5000: "host port 5000 is used by rik", 8443: "host port 8443 is reserved", 65535: "",
	} {
		if got := p.HostPortRefused(port); got != want {
			t.Errorf("HostPortRefused(%d) = %q, want %q", port, got, want)
		}
	}
}

func TestParsePortList(t *testing.T) {
	tests := []struct {
		in      string
		want    []int
		wantErr bool
	}{
		{"", nil, false}, {"22", []int{22}, false}, {" 22, 2379 ,22,,8443", []int{22, 2379, 8443}, false},
		{"0", nil, true}, {"65536", nil, true}, {"ssh", nil, true}, {"22;23", nil, true},
	}
	for _, tt := range tests {
		got, err := ParsePortList(tt.in)
		if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
			t.Errorf("ParsePortList(%q) = %v, %v; want %v, err=%v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}
