// Package firecracker runs Function microVMs with Firecracker, configured
// through its HTTP API on a unix socket: boot source, root drive, network
// interface, machine config, then InstanceStart. Graceful stop sends
// Ctrl-Alt-Del (rik-init turns it into a clean power off).
package firecracker

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/rik-org/rik/internal/riklet/vmm"
)

// Driver starts VMs with the firecracker binary, in the VM's cgroup
// (vmm.Config.Cgroup) but as root: it ignores vmm.Config.UID and GID.
// Running Firecracker unprivileged takes its jailer (a chroot holding
// hard links of the kernel and disk, a TAP owned by the VM's user), which
// rik does not do yet.
type Driver struct {
	Binary string
}

// Name implements vmm.Driver.
func (d *Driver) Name() string { return "firecracker" }

// APISocket is where the driver puts the VM's API socket.
func APISocket(dir string) string { return filepath.Join(dir, "fc.sock") }

// Start implements vmm.Driver.
func (d *Driver) Start(ctx context.Context, cfg vmm.Config) (vmm.Process, error) {
	sock := APISocket(cfg.Dir)
	// Firecracker writes the guest's serial console on its stdout.
	p, err := vmm.StartDetached(vmm.Launch{
		Argv:    []string{d.Binary, "--api-sock", sock, "--id", cfg.ID},
		LogPath: cfg.ConsoleLog, Netns: cmp.Or(cfg.TapNetns, cfg.Netns), Cgroup: cfg.Cgroup,
	})
	if err != nil {
		return vmm.Process{}, fmt.Errorf("starting firecracker: %w", err)
	}
	p.Driver = d.Name()
	fail := func(err error) (vmm.Process, error) {
		_ = vmm.Signal(p, 9)
		return vmm.Process{}, err
	}
	c := NewClient(sock)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if !vmm.Alive(p) {
			return vmm.Process{}, fmt.Errorf("firecracker exited at start")
		}
		if conn, err := net.Dial("unix", sock); err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fail(fmt.Errorf("firecracker did not open its API socket in time"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := Configure(ctx, c, cfg); err != nil {
		return fail(err)
	}
	return p, nil
}

// Shutdown implements vmm.Driver.
func (d *Driver) Shutdown(ctx context.Context, cfg vmm.Config, p vmm.Process) error {
	return NewClient(APISocket(cfg.Dir)).Put(ctx, "/actions", map[string]string{"action_type": "SendCtrlAltDel"})
}

// Configure sets the VM up through the API and starts it.
func Configure(ctx context.Context, c *Client, cfg vmm.Config) error {
	vcpus, mem := cfg.VCPUs, cfg.MemoryMiB
	if vcpus <= 0 {
		vcpus = 1
	}
	if mem <= 0 {
		mem = 128
	}
	boot := map[string]any{"kernel_image_path": cfg.Kernel, "boot_args": cfg.Cmdline}
	if cfg.Initrd != "" {
		boot["initrd_path"] = cfg.Initrd
	}
	steps := []struct {
		path string
		body any
	}{
		{"/machine-config", map[string]any{"vcpu_count": vcpus, "mem_size_mib": mem}},
		{"/boot-source", boot},
		{"/drives/rootfs", map[string]any{"drive_id": "rootfs", "path_on_host": cfg.RootDisk, "is_root_device": true, "is_read_only": false}},
	}
	if cfg.Tap != "" {
		steps = append(steps, struct {
			path string
			body any
		}{"/network-interfaces/eth0", map[string]any{"iface_id": "eth0", "host_dev_name": cfg.Tap, "guest_mac": cfg.MAC.String()}})
	}
	for _, s := range steps {
		if err := c.Put(ctx, s.path, s.body); err != nil {
			return err
		}
	}
	return c.Put(ctx, "/actions", map[string]string{"action_type": "InstanceStart"})
}

// Client talks to one Firecracker API socket.
type Client struct {
	http *http.Client
}

// NewClient returns a client of the API socket at sock.
func NewClient(sock string) *Client {
	// No keep-alive: a client is used for a few calls and dropped, and an
	// idle connection would stay open (an fd and two goroutines) as long
	// as the VM runs.
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	return &Client{http: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// Put sends body as JSON to path and expects a 2xx answer.
func (c *Client) Put(ctx context.Context, path string, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("firecracker PUT %s: %w", path, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://localhost"+path, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("firecracker PUT %s: %w", path, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("firecracker PUT %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var fault struct {
			FaultMessage string `json:"fault_message"`
		}
		if json.Unmarshal(msg, &fault) == nil && fault.FaultMessage != "" {
			msg = []byte(fault.FaultMessage)
		}
		return fmt.Errorf("firecracker PUT %s: %s: %s", path, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}
