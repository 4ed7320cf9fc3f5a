package pod

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"

	"github.com/rik-org/rik/internal/procfs"
	"github.com/rik-org/rik/internal/riklet/podnet"
	"github.com/rik-org/rik/internal/workload"
)

// What a pod runtime does to its node goes through the small interfaces
// below: runc, the container processes, the pod network, the rootfs
// mounts and the cgroups. New wires the real ones; the tests run the same
// lifecycle (start and its rollback, stop, recovery) against stateful fakes.

// containers is the OCI runtime (runc, with its state under --root).
type containers interface {
	// Run creates and starts container id from bundle, detached, its
	// stdout and stderr going to out, and returns the pid of its init.
	// When it fails after the init started, it returns that pid too (the
	// init is then ours to stop and reap).
	Run(ctx context.Context, id, bundle string, out *os.File) (int, error)
	// State describes container id; an error when runc cannot load it.
	State(ctx context.Context, id string) (ctrState, error)
	// List describes every container.
	List(ctx context.Context) ([]ctrState, error)
	// Kill sends sig to the container's init, or with all to all its
	// processes.
	Kill(ctx context.Context, id string, sig syscall.Signal, all bool) error
	// Delete removes the container, killing what still runs in it.
	Delete(ctx context.Context, id string) error
	// HasRecord reports whether runc keeps anything of id, loadable or not.
	HasRecord(id string) bool
	// DropRecord removes what runc keeps of id (a container it cannot load).
	DropRecord(id string) error
	// Exec runs cmd in running container id until it ends or ctx ends,
	// its output going to out, and returns its exit code.
	Exec(ctx context.Context, id string, cmd []string, out io.Writer) (int, error)
}

// ctrState is a container as runc describes it.
type ctrState struct {
	ID     string
	Status string // created, running, paused, stopped
	Pid    int    // its init; 0 once it ended
}

// processes are the containers' init processes.
type processes interface {
	// Wait waits for pid, a child of ours, to end and returns its exit
	// code (128+signal when killed). It fails when pid is not our child.
	Wait(pid int) (int, error)
	// Watch waits until pid (any process) has ended; false when ctx was
	// done first.
	Watch(ctx context.Context, pid int) bool
	// Alive reports whether pid runs (a zombie does not).
	Alive(pid int) bool
	// Reap collects pid if it is an ended child of ours, and does nothing
	// otherwise.
	Reap(pid int)
}

// network is the pod network (package podnet, or cni).
type network = Network

// Network gives pods their network: podnet's built-in one by default, or
// Config.Network (CNI).
type Network interface {
	Setup(ctx context.Context, id string) (podnet.Net, error)
	Get(id string) (podnet.Net, bool)
	Teardown(ctx context.Context, id string) error
	Owners() ([]string, error)
}

// portNetwork is a network that publishes the pods' node ports itself
// (CNI's portmap), given at setup.
type portNetwork interface {
	SetupWithPorts(ctx context.Context, id string, ports []workload.PortMapping) (podnet.Net, error)
}

// mounts make and remove the containers' root filesystems.
type mounts interface {
	// Mount makes bundle/rootfs from the image layers (lowest first) and
	// reports whether it is an overlay (else a copy).
	Mount(bundle string, layers []string) (overlay bool, err error)
	// Unmount unmounts bundle/rootfs if it is mounted.
	Unmount(bundle string) error
}

// cgroupHost is what the runtime needs of the node's cgroups (runc makes
// each container's; the runtime removes a pod's and reads OOM kills).
type cgroupHost interface {
	Remove(path string) error
	Children(path string) []string
	OOMKilled(path string) bool
}

// host is everything of the node a Runtime touches.
type host struct {
	ctrs    containers
	procs   processes
	net     network
	mounts  mounts
	cgroups cgroupHost
}

// runcCLI is the real containers: runc through go-runc.
type runcCLI struct {
	runc *runc.Runc
	root string // runc's --root
}

func newRuncCLI(bin, root string) *runcCLI {
	return &runcCLI{runc: &runc.Runc{Command: bin, Root: root, Setpgid: true}, root: root}
}

// logIO gives runc one log file as the container's stdout and stderr.
type logIO struct{ f *os.File }

func (o logIO) Close() error          { return nil } // the file is closed by its owner
func (o logIO) Stdin() io.WriteCloser { return nil }
func (o logIO) Stdout() io.ReadCloser { return nil }
func (o logIO) Stderr() io.ReadCloser { return nil }
func (o logIO) Set(cmd *exec.Cmd)     { cmd.Stdout, cmd.Stderr = o.f, o.f }

func (c *runcCLI) Run(ctx context.Context, id, bundle string, out *os.File) (int, error) {
	pidFile := filepath.Join(bundle, "init.pid")
	_ = os.Remove(pidFile)
	_, err := c.runc.Run(ctx, id, bundle, &runc.CreateOpts{IO: logIO{out}, PidFile: pidFile, Detach: true})
	pid, perr := readPid(pidFile)
	if err != nil {
		return pid, err
	}
	return pid, perr
}

func (c *runcCLI) State(ctx context.Context, id string) (ctrState, error) {
	st, err := c.runc.State(ctx, id)
	if err != nil {
		return ctrState{}, err
	}
	return ctrState{ID: st.ID, Status: st.Status, Pid: st.Pid}, nil
}

func (c *runcCLI) List(ctx context.Context) ([]ctrState, error) {
	list, err := c.runc.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]ctrState, len(list))
	for i, st := range list {
		out[i] = ctrState{ID: st.ID, Status: st.Status, Pid: st.Pid}
	}
	return out, nil
}

func (c *runcCLI) Kill(ctx context.Context, id string, sig syscall.Signal, all bool) error {
	return c.runc.Kill(ctx, id, int(sig), &runc.KillOpts{All: all})
}

func (c *runcCLI) Delete(ctx context.Context, id string) error {
	return c.runc.Delete(ctx, id, &runc.DeleteOpts{Force: true})
}

func (c *runcCLI) HasRecord(id string) bool {
	_, err := os.Stat(filepath.Join(c.root, id))
	return err == nil
}

func (c *runcCLI) DropRecord(id string) error { return os.RemoveAll(filepath.Join(c.root, id)) }

// hostProcs is the real processes.
type hostProcs struct{}

func (hostProcs) Wait(pid int) (int, error) {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("waiting for pid %d: %w", pid, err)
		}
		break
	}
	if ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ws.ExitStatus(), nil
}

func (hostProcs) Watch(ctx context.Context, pid int) bool { return procfs.Watch(ctx, pid, 0) == nil }

func (hostProcs) Alive(pid int) bool { return procfs.Alive(pid, 0) }

func (hostProcs) Reap(pid int) {
	if pid <= 0 {
		return
	}
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

// hostMounts is the real mounts (overlayfs, or a copy of the layers).
type hostMounts struct{}

func (hostMounts) Mount(bundle string, layers []string) (bool, error) {
	return mountRootfs(bundle, layers)
}

func (hostMounts) Unmount(bundle string) error { return unmountRootfs(bundle) }
