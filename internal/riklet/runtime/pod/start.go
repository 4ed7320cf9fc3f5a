package pod

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/atomicfile"
	"github.com/rik-org/rik/internal/riklet/image"
	"github.com/rik-org/rik/internal/riklet/podnet"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/workload"
)

// start makes pod p of inst: its record, network, containers and exposed
// ports. On error the caller removes what it made (cleanup).
func (r *Runtime) start(ctx context.Context, p *pod, inst runtime.Instance, imgs []image.Image, mark func(string)) error {
	n, err := r.prepare(ctx, p, inst)
	if err != nil {
		return err
	}
	mark("network")
	dir := r.podDir(inst.ID)
	hosts, resolv, err := writeNetFiles(dir, inst.Name, n.IP)
	if err != nil {
		return err
	}
	base := specInput{Rootfs: "rootfs", Hostname: hostname(inst), NetnsPath: n.NetnsPath,
		PidsLimit: r.cfg.PidsLimit, HostsFile: hosts, ResolvFile: resolv}
	for i, c := range inst.Workload.Spec.Containers {
		in := base
		in.Image, in.Container, in.Index = imgs[i].Config, c, i
		in.CgroupPath = "/" + r.cgroup(inst.ID, c.Name)
		bundle := filepath.Join(dir, c.Name)
		if err := r.prepareBundle(bundle, in, imgs[i].Layers); err != nil {
			return err
		}
		if err := r.run(ctx, p, p.Containers[i], bundle); err != nil {
			return fmt.Errorf("starting container %s: %w", c.Name, err)
		}
	}
	mark("containers")
	if err := r.expose(ctx, p, inst, n.IP); err != nil {
		return err
	}
	if err := r.save(p); err != nil {
		return err
	}
	r.log.Info("pod running", "id", p.ID, "name", inst.Name, "ip", p.IP)
	return nil
}

// prepare records pod p (before making anything, so Stop and Recover find
// all), sets up its network and its log directory, and registers it.
func (r *Runtime) prepare(ctx context.Context, p *pod, inst runtime.Instance) (podnet.Net, error) {
	id := inst.ID
	if err := os.MkdirAll(r.podDir(id), 0o700); err != nil {
		return podnet.Net{}, fmt.Errorf("creating %s: %w", r.podDir(id), err)
	}
	for _, c := range inst.Workload.Spec.Containers {
		p.Containers = append(p.Containers, &container{Name: c.Name, RuncID: runcID(id, c.Name)})
	}
	if err := r.save(p); err != nil {
		return podnet.Net{}, err
	}
	var n podnet.Net
	var err error
	if pn, ok := r.net.(portNetwork); ok {
		n, err = pn.SetupWithPorts(ctx, id, nodePorts(inst))
	} else {
		n, err = r.net.Setup(ctx, id)
	}
	if err != nil {
		return podnet.Net{}, fmt.Errorf("setting up pod network: %w", err)
	}
	p.IP = n.IP.String()
	if err := r.save(p); err != nil {
		return podnet.Net{}, err
	}
	if err := os.MkdirAll(r.logDir(id), 0o700); err != nil {
		return podnet.Net{}, fmt.Errorf("creating %s: %w", r.logDir(id), err)
	}
	r.mu.Lock()
	r.pods[id] = p
	r.mu.Unlock()
	return n, nil
}

// nodePorts are the pod's ports with a node port.
func nodePorts(inst runtime.Instance) []workload.PortMapping {
	var ports []workload.PortMapping
	for _, c := range inst.Workload.Spec.Containers {
		for _, pt := range c.Ports {
			if pt.Port != 0 {
				target := pt.TargetPort
				if target == 0 {
					target = pt.Port
				}
				ports = append(ports, workload.PortMapping{Port: pt.Port, TargetPort: target, Protocol: pt.Protocol})
			}
		}
	}
	return ports
}

// expose publishes the pod's ports (those with a node port), when the
// runtime has an Exposer.
func (r *Runtime) expose(ctx context.Context, p *pod, inst runtime.Instance, ip netip.Addr) error {
	ports := nodePorts(inst)
	if len(ports) == 0 || r.cfg.Exposer == nil {
		return nil
	}
	p.Ports = ports // set first: a rollback unexposes what was half done
	// Recorded before exposing: a Stop after a crash here unexposes them too.
	if err := r.save(p); err != nil {
		return err
	}
	if err := r.cfg.Exposer.Expose(ctx, p.ID, ip, ports); err != nil {
		return fmt.Errorf("exposing ports: %w", err)
	}
	return nil
}

func hostname(inst runtime.Instance) string {
	h := inst.Name
	if h == "" {
		h = inst.ID
	}
	if len(h) > 63 {
		h = h[:63]
	}
	return h
}

// writeNetFiles writes the pod's /etc/hosts and /etc/resolv.conf.
func writeNetFiles(dir, name string, ip netip.Addr) (hosts, resolv string, err error) {
	hosts = filepath.Join(dir, "hosts")
	content := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if name != "" {
		content += ip.String() + "\t" + name + "\n"
	}
	if err := os.WriteFile(hosts, []byte(content), 0o644); err != nil {
		return "", "", fmt.Errorf("writing %s: %w", hosts, err)
	}
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return hosts, "", nil
	}
	resolv = filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolv, b, 0o644); err != nil {
		return "", "", fmt.Errorf("writing %s: %w", resolv, err)
	}
	return hosts, resolv, nil
}

func (r *Runtime) prepareBundle(bundle string, in specInput, layers []string) error {
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		return fmt.Errorf("creating bundle %s: %w", bundle, err)
	}
	overlay, err := r.mounts.Mount(bundle, layers)
	if err != nil {
		return err
	}
	if !overlay {
		r.log.Warn("overlayfs not available, copied the image", "bundle", bundle)
	}
	rootfs := filepath.Join(bundle, "rootfs")
	if sc := in.Container.SecurityContext; in.Image.User != "" || sc != nil && (sc.RunAsUser != nil || sc.RunAsGroup != nil) {
		passwd, _ := openInRoot(rootfs, "etc/passwd")
		group, _ := openInRoot(rootfs, "etc/group")
		u, err := containerUser(in.Image.User, sc, nilIfNil(passwd), nilIfNil(group))
		if passwd != nil {
			passwd.Close()
		}
		if group != nil {
			group.Close()
		}
		if err != nil {
			return fmt.Errorf("spec.containers[%d]: image user: %w", in.Index, err)
		}
		in.User = u
	}
	in.NoSeccomp, in.HostCaps = r.noSeccomp, r.hostCaps
	spec, err := buildSpec(in)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return fmt.Errorf("writing spec: %w", err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		return fmt.Errorf("writing spec: %w", err)
	}
	return nil
}

// nilIfNil turns a nil *os.File into a nil io.Reader interface.
func nilIfNil(f *os.File) interface{ Read([]byte) (int, error) } {
	if f == nil {
		return nil
	}
	return f
}

// run starts ctr with `runc run --detach`. The container's init, orphaned
// when runc exits, is re-parented to the riklet (a child subreaper, see
// New), which waits for it to learn its exit code. The container writes
// straight into its log file.
func (r *Runtime) run(ctx context.Context, p *pod, ctr *container, bundle string) error {
	logPath := filepath.Join(r.logDir(p.ID), ctr.Name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening log %s: %w", logPath, err)
	}
	defer f.Close() // the container has its own copy
	sctx, cancel := context.WithTimeout(ctx, r.cfg.StartWait)
	defer cancel()
	pid, err := r.ctrs.Run(sctx, ctr.RuncID, bundle, f)
	if err != nil {
		ctr.pid = pid // if started, left to us and waited for by nobody: stopContainer reaps it
		return fmt.Errorf("runc run %s: %w: %s", ctr.RuncID, err, tailFile(logPath, 5))
	}
	ctr.done = make(chan struct{})
	// Not tracked by r.wg: this goroutine lives as long as the container.
	go func() {
		r.containerExited(p, ctr, r.reap(pid))
	}()
	return nil
}

// readPid reads the pid runc wrote in path.
func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("reading pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("bad pid %q", b)
	}
	return pid, nil
}

// reap waits for the container init pid, our child once runc has exited,
// and returns its exit code (128+signal when killed). Where it is not our
// child (no subreaper), it only watches it, and the code is unknown (nil).
func (r *Runtime) reap(pid int) *int {
	code, err := r.procs.Wait(pid)
	if err != nil {
		r.log.Debug("cannot wait for container process, watching it", "pid", pid, "err", err)
		r.procs.Watch(context.Background(), pid)
		return nil
	}
	return &code
}

// containerExited records an exit and reports it, once per pod, unless the
// pod is being stopped.
func (r *Runtime) containerExited(p *pod, ctr *container, code *int) {
	ctr.code = code
	close(ctr.done)
	<-p.ready
	r.mu.Lock()
	report := !r.closed && !p.stopping && !p.exited && r.pods[p.ID] == p
	if report {
		p.exited = true
	}
	r.mu.Unlock()
	if !report {
		return
	}
	st := runtime.Status{InstanceID: p.ID, Phase: runtime.PhaseExited, IP: p.IP, ExitCode: code}
	switch {
	case code == nil:
		st.Reason = api.ReasonUnknown
		st.Message = fmt.Sprintf("container %s exited while the riklet was not watching", ctr.Name)
	case *code == 0:
		st.Reason = api.ReasonCompleted
		st.Message = fmt.Sprintf("container %s exited with code 0", ctr.Name)
	default:
		st.Reason = api.ReasonError
		if r.cgroups.OOMKilled(r.cgroup(p.ID, ctr.Name)) {
			st.Reason = api.ReasonOOMKilled
		}
		st.Message = fmt.Sprintf("container %s exited with code %d", ctr.Name, *code)
	}
	r.log.Info("container exited", "id", p.ID, "container", ctr.Name, "reason", st.Reason, "message", st.Message)
	r.report(st)
}

// save writes the pod record.
func (r *Runtime) save(p *pod) error {
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("saving pod %s: %w", p.ID, err)
	}
	if err := atomicfile.Write(filepath.Join(r.podDir(p.ID), "pod.json"), b, 0o600); err != nil {
		return fmt.Errorf("saving pod %s: %w", p.ID, err)
	}
	return nil
}

func (r *Runtime) load(id string) (*pod, error) {
	b, err := os.ReadFile(filepath.Join(r.podDir(id), "pod.json"))
	if err != nil {
		return nil, err
	}
	var p pod
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("reading pod %s: %w", id, err)
	}
	p.ID = id
	return &p, nil
}

// tailFile returns the last n lines of a file, for error messages.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "no output"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	out := strings.TrimSpace(strings.Join(lines, " | "))
	if out == "" {
		return "no output"
	}
	return out
}
