// Package runtimetest has a stateful fake runtime.Runtime for tests of the
// riklet agent and end-to-end tests. It runs nothing: Start records the
// instance as running, Stop forgets it. Its state is kept in a file so that
// a fake built again on the same directory (a "restarted" riklet) adopts
// what the previous one ran.
package runtimetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/workload"
)

// fakeInstance is one instance the fake knows.
type fakeInstance struct {
	Name     string                 `json:"name"`
	IP       string                 `json:"ip"`
	Ports    []workload.PortMapping `json:"ports,omitempty"`
	Exited   bool                   `json:"exited,omitempty"`
	ExitCode int                    `json:"exitCode,omitempty"`
}

type fakeState struct {
	NextIP    int                      `json:"nextIP"`
	Instances map[string]*fakeInstance `json:"instances"`
}

// Fake is a stateful fake runtime for one kind.
type Fake struct {
	kind   workload.Kind
	path   string
	report runtime.Reporter

	mu        sync.Mutex
	st        fakeState
	failNext  error
	failStop  error
	progress  string
	logData   []byte
	startHook func(ctx context.Context, inst runtime.Instance) error
	starts    int
	stops     int
	forgotten []string
	removed   []string
	closed    bool
}

// New returns a fake for kind whose state lives in dir (created if needed;
// several kinds may share a dir). report receives what Exit reports.
func New(kind workload.Kind, dir string, report runtime.Reporter) (*Fake, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating fake runtime dir: %w", err)
	}
	f := &Fake{
		kind:   kind,
		path:   filepath.Join(dir, "fake-"+string(kind)+".json"),
		report: report,
		st:     fakeState{Instances: map[string]*fakeInstance{}},
	}
	b, err := os.ReadFile(f.path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading fake runtime state: %w", err)
	}
	if err == nil {
		if err := json.Unmarshal(b, &f.st); err != nil {
			return nil, fmt.Errorf("decoding fake runtime state: %w", err)
		}
		if f.st.Instances == nil {
			f.st.Instances = map[string]*fakeInstance{}
		}
	}
	return f, nil
}

// Factory builds fakes on one directory; its New method is a
// riklet.RuntimeFactory. Last returns the fake it built last.
type Factory struct {
	Kind workload.Kind
	Dir  string
	// Err, if set, makes New fail (a runtime unavailable on this node).
	Err error

	mu   sync.Mutex
	last *Fake
}

// New builds a fake (matches riklet.RuntimeFactory).
func (fa *Factory) New(_ context.Context, report runtime.Reporter) (runtime.Runtime, error) {
	if fa.Err != nil {
		return nil, fa.Err
	}
	f, err := New(fa.Kind, fa.Dir, report)
	if err != nil {
		return nil, err
	}
	fa.mu.Lock()
	fa.last = f
	fa.mu.Unlock()
	return f, nil
}

// Last is the fake built last, nil if none.
func (fa *Factory) Last() *Fake {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	return fa.last
}

// save writes the state; the caller holds f.mu.
func (f *Fake) save() error {
	b, err := json.Marshal(f.st)
	if err != nil {
		return fmt.Errorf("encoding fake runtime state: %w", err)
	}
	if err := os.WriteFile(f.path, b, 0o600); err != nil {
		return fmt.Errorf("saving fake runtime state: %w", err)
	}
	return nil
}

// Kind implements runtime.Runtime.
func (f *Fake) Kind() workload.Kind { return f.kind }

// Start implements runtime.Runtime: the instance is recorded as running with
// an address 10.99.x.y and the workload's host ports.
func (f *Fake) Start(ctx context.Context, inst runtime.Instance) (runtime.Status, error) {
	f.mu.Lock()
	f.starts++
	hook, progress := f.startHook, f.progress
	failNext := f.failNext
	f.failNext = nil
	f.mu.Unlock()

	if progress != "" && f.report != nil {
		f.report(runtime.Status{InstanceID: inst.ID, Phase: runtime.PhaseCreating, Message: progress})
	}
	if hook != nil {
		if err := hook(ctx, inst); err != nil {
			return runtime.Status{InstanceID: inst.ID, Phase: runtime.PhaseFailed}, err
		}
	}
	if failNext != nil {
		return runtime.Status{InstanceID: inst.ID, Phase: runtime.PhaseFailed}, failNext
	}
	if err := ctx.Err(); err != nil {
		return runtime.Status{InstanceID: inst.ID, Phase: runtime.PhaseFailed}, err
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	fi := f.st.Instances[inst.ID]
	if fi == nil || fi.Exited {
		f.st.NextIP++
		n := f.st.NextIP
		fi = &fakeInstance{
			Name:  inst.Name,
			IP:    fmt.Sprintf("10.99.%d.%d", (n/250)%250, n%250+1),
			Ports: inst.Workload.HostPorts(),
		}
		f.st.Instances[inst.ID] = fi
		if err := f.save(); err != nil {
			delete(f.st.Instances, inst.ID)
			return runtime.Status{InstanceID: inst.ID, Phase: runtime.PhaseFailed}, err
		}
	}
	return f.status(inst.ID, fi), nil
}

func (f *Fake) status(id string, fi *fakeInstance) runtime.Status {
	st := runtime.Status{InstanceID: id, Phase: runtime.PhaseRunning, IP: fi.IP, Ports: fi.Ports,
		Timings: map[string]int64{"start": 1}}
	if fi.Exited {
		code := fi.ExitCode
		st.Phase, st.ExitCode = runtime.PhaseExited, &code
	}
	return st
}

// Stop implements runtime.Runtime: the instance is forgotten.
func (f *Fake) Stop(_ context.Context, inst runtime.Instance) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stops++
	if err := f.failStop; err != nil {
		f.failStop = nil
		return err
	}
	if _, ok := f.st.Instances[inst.ID]; !ok {
		return nil
	}
	delete(f.st.Instances, inst.ID)
	return f.save()
}

// Forget records that the agent is done with a destroyed instance (the real
// pod runtime then drops its logs).
func (f *Fake) Forget(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgotten = append(f.forgotten, id)
	return nil
}

// Forgotten lists the ids passed to Forget, in order.
func (f *Fake) Forgotten() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.forgotten...)
}

// Recover implements runtime.Runtime: owned instances come back running (or
// exited, or failed "Lost" when the fake does not know them); instances the
// fake knows but not owned are removed (see Removed).
func (f *Fake) Recover(_ context.Context, owned []runtime.Instance) ([]runtime.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	keep := map[string]bool{}
	var out []runtime.Status
	for _, inst := range owned {
		keep[inst.ID] = true
		fi := f.st.Instances[inst.ID]
		if fi == nil {
			out = append(out, runtime.Status{InstanceID: inst.ID, Phase: runtime.PhaseFailed, Reason: api.ReasonLost, Message: "not known to the fake runtime"})
			continue
		}
		out = append(out, f.status(inst.ID, fi))
	}
	for id := range f.st.Instances {
		if !keep[id] {
			delete(f.st.Instances, id)
			f.removed = append(f.removed, id)
		}
	}
	slices.Sort(f.removed)
	return out, f.save()
}

// Logs implements runtime.Runtime: three fixed lines "<name> line <n>", or
// what SetLogs gave; Tail keeps the last lines.
func (f *Fake) Logs(ctx context.Context, inst runtime.Instance, opts runtime.LogOptions, w io.Writer) error {
	f.mu.Lock()
	fi := f.st.Instances[inst.ID]
	data := f.logData
	f.mu.Unlock()
	if fi == nil {
		return runtime.ErrNotFound
	}
	if data == nil {
		data = []byte(fmt.Sprintf("%[1]s line 1\n%[1]s line 2\n%[1]s line 3\n", fi.Name))
	}
	if opts.Tail > 0 {
		lines := strings.SplitAfter(strings.TrimSuffix(string(data), "\n"), "\n")
		if len(lines) > opts.Tail {
			lines = lines[len(lines)-opts.Tail:]
		}
		data = []byte(strings.Join(lines, "") + "\n")
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	return ctx.Err()
}

// --- test hooks

// Exit marks a running instance as exited with code and reports it
// (PhaseExited) through the Reporter. It fails if the fake does not run id.
func (f *Fake) Exit(id string, code int) error {
	f.mu.Lock()
	fi := f.st.Instances[id]
	if fi == nil || fi.Exited {
		f.mu.Unlock()
		return fmt.Errorf("exit %s: not running", id)
	}
	fi.Exited, fi.ExitCode = true, code
	err := f.save()
	st := f.status(id, fi)
	f.mu.Unlock()
	if f.report != nil {
		f.report(st)
	}
	return err
}

// FailNext makes the next Start fail with err.
func (f *Fake) FailNext(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext = err
}

// FailNextStop makes the next Stop fail with err (the instance keeps running).
func (f *Fake) FailNextStop(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failStop = err
}

// SetProgress makes Start report a PhaseCreating status with msg first.
func (f *Fake) SetProgress(msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.progress = msg
}

// SetStartHook runs hook at the start of every Start (to block or fail it).
func (f *Fake) SetStartHook(hook func(ctx context.Context, inst runtime.Instance) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.startHook = hook
}

// SetLogs replaces what Logs writes.
func (f *Fake) SetLogs(data []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logData = append([]byte(nil), data...)
}

// Starts is the number of Start calls.
func (f *Fake) Starts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.starts
}

// Stops is the number of Stop calls.
func (f *Fake) Stops() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stops
}

// Running lists the ids of the instances running (not exited), sorted.
func (f *Fake) Running() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for id, fi := range f.st.Instances {
		if !fi.Exited {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// Removed lists the instances Recover removed because nobody owned them.
func (f *Fake) Removed() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.removed)
}

// Close marks the fake closed (the agent closes its runtimes when it stops).
func (f *Fake) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// Closed reports whether Close was called.
func (f *Fake) Closed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// Plant records an instance as running without Start (a leftover from a
// previous life, for Recover tests).
func (f *Fake) Plant(id, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st.NextIP++
	f.st.Instances[id] = &fakeInstance{Name: name, IP: fmt.Sprintf("10.99.0.%d", f.st.NextIP%250+1)}
	return f.save()
}
