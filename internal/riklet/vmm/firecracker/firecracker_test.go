package firecracker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rik-org/rik/internal/riklet/vmm"
	"github.com/rik-org/rik/internal/testutil"
)

// call is one request the fake API server received.
type call struct {
	Method, Path string
	Body         map[string]any
}

// fakeAPI is a stateful fake of Firecracker's API: it records calls,
// rejects configuration after InstanceStart and unknown paths, and can be
// told to fail one path.
type fakeAPI struct {
	mu      sync.Mutex
	calls   []call
	started bool
	failOn  string
	onStop  func()
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	b, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(b, &body); err != nil || r.Method != http.MethodPut {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"fault_message":"bad request: %v"}`, err)
		return
	}
	f.mu.Lock()
	f.calls = append(f.calls, call{r.Method, r.URL.Path, body})
	started, failOn := f.started, f.failOn
	f.mu.Unlock()
	known := map[string]bool{"/machine-config": true, "/boot-source": true, "/drives/rootfs": true, "/network-interfaces/eth0": true, "/actions": true}
	switch {
	case !known[r.URL.Path]:
		w.WriteHeader(http.StatusNotFound)
	case r.URL.Path == failOn:
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"fault_message":"Invalid kernel path"}`)
	case r.URL.Path == "/actions" && body["action_type"] == "InstanceStart":
		f.mu.Lock()
		f.started = true
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case r.URL.Path == "/actions" && body["action_type"] == "SendCtrlAltDel":
		if !started {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
		if f.onStop != nil {
			go f.onStop()
		}
	case started:
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"fault_message":"The requested operation is not supported after starting the microVM."}`)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func serveFake(t *testing.T, sock string, f *fakeAPI) {
	t.Helper()
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: f}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

func testConfig(dir string) vmm.Config {
	return vmm.Config{
		ID: "0f1e2d3c-aaaa-4bbb-8ccc-000000000001", Dir: dir, Kernel: "/k/vmlinux", Initrd: "/k/initrd.gz",
		Cmdline: "console=ttyS0 rik.ip=10.62.0.1/30", RootDisk: dir + "/rootfs.ext4", Tap: "rik0a1b2c",
		MAC: net.HardwareAddr{0x52, 0x54, 1, 2, 3, 4}, VCPUs: 2, MemoryMiB: 256, ConsoleLog: dir + "/console.log",
	}
}

func TestConfigure(t *testing.T) {
	dir := t.TempDir()
	f := &fakeAPI{}
	serveFake(t, APISocket(dir), f)
	if err := Configure(context.Background(), NewClient(APISocket(dir)), testConfig(dir)); err != nil {
		t.Fatal(err)
	}
	want := []call{
		{"PUT", "/machine-config", map[string]any{"vcpu_count": 2.0, "mem_size_mib": 256.0}},
		{"PUT", "/boot-source", map[string]any{"kernel_image_path": "/k/vmlinux", "initrd_path": "/k/initrd.gz", "boot_args": "console=ttyS0 rik.ip=10.62.0.1/30"}},
		{"PUT", "/drives/rootfs", map[string]any{"drive_id": "rootfs", "path_on_host": dir + "/rootfs.ext4", "is_root_device": true, "is_read_only": false}},
		{"PUT", "/network-interfaces/eth0", map[string]any{"iface_id": "eth0", "host_dev_name": "rik0a1b2c", "guest_mac": "52:54:01:02:03:04"}},
		{"PUT", "/actions", map[string]any{"action_type": "InstanceStart"}},
	}
	if diff := cmp.Diff(want, f.calls); diff != "" {
		t.Errorf("API calls (-want +got):\n%s", diff)
	}
	if err := (&Driver{}).Shutdown(context.Background(), testConfig(dir), vmm.Process{}); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if last := f.calls[len(f.calls)-1]; last.Path != "/actions" || last.Body["action_type"] != "SendCtrlAltDel" {
		t.Errorf("Shutdown sent %+v", last)
	}
}

func TestConfigureDefaultsAndErrors(t *testing.T) {
	dir := t.TempDir()
	f := &fakeAPI{failOn: "/boot-source"}
	serveFake(t, APISocket(dir), f)
	cfg := testConfig(dir)
	cfg.VCPUs, cfg.MemoryMiB, cfg.Tap, cfg.Initrd = 0, 0, "", ""
	err := Configure(context.Background(), NewClient(APISocket(dir)), cfg)
	if err == nil || !strings.Contains(err.Error(), "Invalid kernel path") || !strings.Contains(err.Error(), "/boot-source") {
		t.Fatalf("err = %v, want the API's fault message", err)
	}
	if diff := cmp.Diff(map[string]any{"vcpu_count": 1.0, "mem_size_mib": 128.0}, f.calls[0].Body); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	for _, c := range f.calls {
		if c.Path == "/actions" || c.Path == "/network-interfaces/eth0" {
			t.Errorf("unexpected call after failure or without tap: %+v", c)
		}
	}
	if err := NewClient(filepath.Join(dir, "nothing.sock")).Put(context.Background(), "/actions", map[string]string{}); err == nil {
		t.Errorf("Put to a missing socket succeeded")
	}
}

// TestClientLeavesNoConnection: once Configure and Shutdown returned, no
// connection to the API socket stays open (the riklet keeps none per VM).
func TestClientLeavesNoConnection(t *testing.T) {
	dir := t.TempDir()
	l, err := net.Listen("unix", APISocket(dir))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	open := 0
	srv := &http.Server{Handler: &fakeAPI{}, ConnState: func(_ net.Conn, s http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		switch s {
		case http.StateNew:
			open++
		case http.StateClosed, http.StateHijacked:
			open--
		}
	}}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	if err := Configure(context.Background(), NewClient(APISocket(dir)), testConfig(dir)); err != nil {
		t.Fatal(err)
	}
	if err := (&Driver{}).Shutdown(context.Background(), testConfig(dir), vmm.Process{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 2*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return open == 0
	}, func() string {
		mu.Lock()
		defer mu.Unlock()
		return fmt.Sprintf("%d connection(s) to the API socket still open", open)
	})
}

// TestMain lets this test binary act as a fake firecracker process.
func TestMain(m *testing.M) {
	if os.Getenv("RIK_FAKE_FIRECRACKER") == "1" {
		os.Exit(fakeFirecrackerMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeFirecrackerMain(args []string) int {
	var sock string
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--api-sock" {
			sock = args[i+1]
		}
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Println("fake firecracker:", err)
		return 1
	}
	done := make(chan struct{})
	f := &fakeAPI{onStop: func() { close(done) }}
	go http.Serve(l, f)
	fmt.Println("fake firecracker serving")
	<-done
	time.Sleep(50 * time.Millisecond)
	f.mu.Lock()
	json.NewEncoder(os.Stdout).Encode(f.calls)
	f.mu.Unlock()
	return 0
}

func TestDriverStartAndShutdown(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("RIK_FAKE_FIRECRACKER", "1")
	dir := t.TempDir()
	cfg := testConfig(dir)
	d := &Driver{Binary: exe}
	p, err := d.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if p.Driver != "firecracker" || !vmm.Alive(p) || !vmm.CmdlineContains(p.Pid, cfg.ID) {
		t.Fatalf("process %+v not running with the id in its command line", p)
	}
	if err := d.Shutdown(context.Background(), cfg, p); err != nil {
		t.Fatal(err)
	}
	if !vmm.WaitGone(context.Background(), p, 5*time.Second) {
		t.Fatal("fake firecracker did not exit after SendCtrlAltDel")
	}
	out, _ := os.ReadFile(cfg.ConsoleLog)
	if !strings.Contains(string(out), `"InstanceStart"`) || !strings.Contains(string(out), `"SendCtrlAltDel"`) {
		t.Errorf("console (fake stdout) = %s", out)
	}
}
