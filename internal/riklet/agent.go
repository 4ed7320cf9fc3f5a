package riklet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/workerpb"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/workload"
)

// agent is the state of a running riklet.
type agent struct {
	ctx  context.Context // lifetime of the agent
	cfg  Config
	k    knobs
	log  *slog.Logger
	host *hostSampler

	runtimes map[workload.Kind]runtime.Runtime
	kinds    []string
	all      []runtime.Runtime // every runtime built, closed at the end

	// mu guards runs and genSeq, and makes a ledger change and the status
	// queued for it one step (the ledger saves itself outside mu).
	mu     sync.Mutex
	ledger *Ledger
	runs   map[string]*runState
	genSeq int
	queue  *statusQueue

	// heartbeatEvery is the heartbeat interval in use (a time.Duration):
	// the configured one, or shorter when the scheduler asks.
	heartbeatEvery atomic.Int64

	// serialMu guards pending, closed and adding to wg.
	serialMu sync.Mutex
	pending  map[string][]func() // per instance: operations waiting to run
	closed   bool
	wg       sync.WaitGroup
}

// runState is what the agent keeps in memory about a running instance.
type runState struct {
	step    int       // consecutive restarts, for the backoff
	started time.Time // last successful start
	gen     int       // identifies the restart scheduled last
	epoch   int       // counts starts; an exit seen during an older run is ignored

	cancelStart context.CancelFunc // cancels the Start in progress, if any
	aborted     bool               // a DESTROY is queued: do not start, cancel a start

	// recovering: the entry is not settled yet after a riklet start; an
	// exit reported meanwhile is held and handled once it is.
	recovering bool
	held       *runtime.Status
}

// errAborted: a start was cancelled because the instance is being destroyed.
var errAborted = errors.New("start aborted: instance being destroyed")

func newAgent(ctx context.Context, cfg Config, ledger *Ledger) *agent {
	return &agent{
		ctx:      ctx,
		cfg:      cfg,
		k:        *cfg.knobs,
		log:      cfg.Logger,
		host:     &hostSampler{procDir: "/proc", stateDir: cfg.StateDir},
		runtimes: map[workload.Kind]runtime.Runtime{},
		ledger:   ledger,
		runs:     map[string]*runState{},
		queue:    newStatusQueue(cfg.knobs.queueMax),
		pending:  map[string][]func(){},
	}
}

// goAgent runs f in a goroutine owned by the agent, unless it is shutting down.
func (a *agent) goAgent(f func()) {
	a.serialMu.Lock()
	defer a.serialMu.Unlock()
	if a.closed {
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		f()
	}()
}

// serial runs f after every operation queued before it for the same
// instance, in a goroutine; operations of different instances run
// concurrently.
func (a *agent) serial(id string, f func()) {
	a.serialMu.Lock()
	defer a.serialMu.Unlock()
	if a.closed {
		return
	}
	q, busy := a.pending[id]
	a.pending[id] = append(q, f)
	if busy {
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			a.serialMu.Lock()
			q := a.pending[id]
			if len(q) == 0 {
				delete(a.pending, id)
				a.serialMu.Unlock()
				return
			}
			next := q[0]
			a.pending[id] = q[1:]
			a.serialMu.Unlock()
			next()
		}
	}()
}

// shutdown stops accepting work and waits for the agent's goroutines; the
// caller has cancelled a.ctx.
func (a *agent) shutdown() {
	a.serialMu.Lock()
	a.closed = true
	a.serialMu.Unlock()
	a.wg.Wait()
}

// closeRuntimes closes the runtimes that have a Close method (they stop
// watching; what they run keeps running for the next riklet to adopt).
func (a *agent) closeRuntimes() {
	for _, rt := range a.all {
		if c, ok := rt.(io.Closer); ok {
			if err := c.Close(); err != nil {
				a.log.Warn("closing runtime", "kind", rt.Kind(), "error", err)
			}
		}
	}
}

func (a *agent) ledgerLen() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ledger.Len()
}

// --- statuses

func pbStatus(s workload.Status) commonpb.ResourceStatus {
	return commonpb.ResourceStatus(commonpb.ResourceStatus_value[string(s)])
}

func pbPorts(ports []workload.PortMapping) []*commonpb.PortMapping {
	var out []*commonpb.PortMapping
	for _, p := range ports {
		out = append(out, &commonpb.PortMapping{Port: uint32(p.Port), TargetPort: uint32(p.TargetPort), Protocol: p.Protocol})
	}
	return out
}

// metric is the wire status of a ledger entry.
func metric(e Entry) *commonpb.InstanceMetric {
	m := &commonpb.InstanceMetric{
		Status:     pbStatus(e.Last.Status),
		InstanceId: e.InstanceID,
		Ip:         e.Last.IP,
		Ports:      pbPorts(e.Last.Ports),
		Reason:     e.Last.Reason,
		Message:    e.Last.Message,
		Restarts:   int32(e.Restarts),
		WorkloadId: e.WorkloadID,
		TimingsMs:  e.Last.Timings,
	}
	if e.Last.ExitCode != nil {
		m.HasExitCode = true
		m.ExitCode = int32(*e.Last.ExitCode)
	}
	return m
}

// update changes the ledger entry of id with f, queues its new status and
// saves the ledger. It reports false when the node does not own id.
func (a *agent) update(id string, f func(e *Entry)) (Entry, bool) {
	a.mu.Lock()
	e, ok := a.ledger.Get(id)
	if !ok {
		a.mu.Unlock()
		return Entry{}, false
	}
	f(&e)
	a.ledger.Set(e)
	a.queue.push(metric(e))
	a.mu.Unlock()
	a.syncLedger()
	return e, true
}

// syncLedger saves the ledger (outside a.mu: concurrent changes share a
// write). A failure is logged; the next save retries.
func (a *agent) syncLedger() {
	if err := a.ledger.Sync(); err != nil {
		a.log.Error("saving ledger", "error", err)
	}
}

// setStatus replaces the last status of id.
func (a *agent) setStatus(id string, s LastStatus) {
	a.update(id, func(e *Entry) { e.Last = s })
}

// sendUnowned queues a status for an instance the ledger does not hold.
func (a *agent) sendUnowned(m *commonpb.InstanceMetric) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.queue.push(m)
}

// get returns the ledger entry of id.
func (a *agent) get(id string) (Entry, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ledger.Get(id)
}

// snapshot is the latest status of every owned instance.
func (a *agent) snapshotLocked() []*commonpb.InstanceMetric {
	var out []*commonpb.InstanceMetric
	for _, e := range a.ledger.List() {
		out = append(out, metric(e))
	}
	return out
}

// resend queues the latest status of every owned instance first (after a
// reconnect), dropping older queued statuses of those instances.
func (a *agent) resend() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.queue.reset(a.snapshotLocked())
}

// instance rebuilds the runtime instance of a ledger entry.
func (a *agent) instance(e Entry) (runtime.Instance, error) {
	inst := runtime.Instance{ID: e.InstanceID, Name: e.Name, WorkloadID: e.WorkloadID}
	w, err := workload.Parse(e.Definition)
	if err != nil {
		inst.Workload.Kind = kindOf(e.Kind)
		inst.Workload.Name = e.Name
		return inst, fmt.Errorf("parsing definition of %s: %w", e.Name, err)
	}
	inst.Workload = w
	return inst, nil
}

// --- orders

// dispatch handles one order from the scheduler, serialised per instance.
func (a *agent) dispatch(o *workerpb.InstanceScheduling) {
	id := o.GetInstanceId()
	if err := validInstanceID(id); err != nil {
		// Runtimes name files and devices after the id: never pass one on.
		a.log.Warn("order with an invalid instance id", "error", err, "action", o.GetAction())
		if id == "" {
			return
		}
		st, reason, msg := commonpb.ResourceStatus_FAILED, api.ReasonInvalidInstanceID, err.Error()
		if o.GetAction() == commonpb.WorkloadRequestKind_DESTROY {
			st, reason, msg = commonpb.ResourceStatus_TERMINATED, api.ReasonDestroyed, "such an instance cannot run here"
		}
		a.sendUnowned(&commonpb.InstanceMetric{Status: st, InstanceId: id, WorkloadId: o.GetWorkloadId(), Reason: reason, Message: msg})
		return
	}
	switch o.GetAction() {
	case commonpb.WorkloadRequestKind_CREATE:
		a.serial(id, func() { a.create(o) })
	case commonpb.WorkloadRequestKind_DESTROY:
		// Do not wait for a start in progress (an image pull may be long),
		// nor begin one queued before this DESTROY.
		a.mu.Lock()
		rs := a.runs[id]
		if rs == nil {
			rs = &runState{} // forgotten by destroy if id is not owned
			a.runs[id] = rs
		}
		rs.aborted = true
		if rs.cancelStart != nil {
			rs.cancelStart()
		}
		a.mu.Unlock()
		a.serial(id, func() { a.destroy(o) })
	default:
		a.log.Warn("order with unknown action ignored", "instance", id, "action", o.GetAction())
	}
}

// validInstanceID accepts ids made of letters, digits, '-' and '_' (a UUID
// on the wire), 1 to 64 characters, starting with a letter or digit.
func validInstanceID(id string) error {
	if id == "" {
		return errors.New("instance_id: required")
	}
	if len(id) > 64 {
		return errors.New("instance_id: at most 64 characters")
	}
	for i, c := range id {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || (i > 0 && (c == '-' || c == '_'))
		if !ok {
			return fmt.Errorf("instance_id: invalid character at %d (want letters, digits, '-', '_')", i)
		}
	}
	return nil
}

func noRuntimeMessage(k workload.Kind) string {
	return fmt.Sprintf("this node has no runtime for kind %q", k)
}

// create starts an instance.
func (a *agent) create(o *workerpb.InstanceScheduling) {
	id := o.GetInstanceId()
	log := a.log.With("instance", id, "name", o.GetInstanceName())
	if e, ok := a.get(id); ok {
		log.Debug("create of an owned instance: re-reporting", "status", e.Last.Status)
		a.mu.Lock()
		a.queue.push(metric(e))
		a.mu.Unlock()
		return
	}
	failed := func(reason, msg string) {
		log.Warn("cannot create instance", "reason", reason, "error", msg)
		a.sendUnowned(&commonpb.InstanceMetric{
			Status: commonpb.ResourceStatus_FAILED, InstanceId: id, WorkloadId: o.GetWorkloadId(),
			Reason: reason, Message: msg,
		})
	}
	def := []byte(o.GetDefinition())
	w, err := workload.Parse(def)
	if err != nil {
		failed(api.ReasonInvalidDefinition, err.Error())
		return
	}
	rt := a.runtimes[w.Kind]
	if rt == nil {
		failed(api.ReasonNoRuntime, noRuntimeMessage(w.Kind))
		return
	}
	name := o.GetInstanceName()
	if name == "" {
		name = id
	}
	if err := workload.ValidName(name); err != nil {
		failed(api.ReasonInvalidDefinition, fmt.Sprintf("instance_name %q: must be a DNS label", name))
		return
	}
	e := Entry{
		InstanceID: id, Name: name, WorkloadID: o.GetWorkloadId(), Kind: w.Kind,
		Definition: def, Last: LastStatus{Status: workload.StatusCreating}, CreatedAt: time.Now().UTC(),
	}
	a.mu.Lock()
	a.ledger.Set(e)
	if rs := a.runs[id]; rs == nil || !rs.aborted {
		a.runs[id] = &runState{} // else a DESTROY is queued: start aborts
	}
	a.queue.push(metric(e))
	a.mu.Unlock()
	// On disk before starting: a crash mid-start is cleaned up by Recover.
	if err := a.ledger.Sync(); err != nil {
		a.mu.Lock()
		a.ledger.Remove(id)
		delete(a.runs, id)
		a.mu.Unlock()
		failed(api.ReasonLedgerError, err.Error())
		return
	}
	log.Info("creating instance", "kind", w.Kind)
	inst := runtime.Instance{ID: id, Name: name, WorkloadID: o.GetWorkloadId(), Workload: w}
	if st, err := a.start(rt, inst); err != nil {
		if a.ctx.Err() != nil || errors.Is(err, errAborted) {
			return // shutting down (Recover settles it), or the DESTROY queued next does
		}
		log.Warn("instance failed to start", "error", err)
		a.setStatus(id, LastStatus{Status: workload.StatusFailed, Reason: failureReason(st, err), Message: err.Error()})
	}
}

// start starts inst; on success the instance is reported RUNNING. On
// failure everything is stopped again and the error returned.
func (a *agent) start(rt runtime.Runtime, inst runtime.Instance) (runtime.Status, error) {
	ctx, cancel := context.WithTimeout(a.ctx, a.k.startTimeout)
	defer cancel()
	a.mu.Lock()
	rs := a.runs[inst.ID]
	if rs != nil {
		if rs.aborted {
			a.mu.Unlock()
			return runtime.Status{}, errAborted
		}
		rs.epoch++
		rs.cancelStart = cancel
	}
	a.mu.Unlock()
	st, err := rt.Start(ctx, inst)
	a.mu.Lock()
	aborted := rs != nil && rs.aborted
	if rs != nil {
		rs.cancelStart = nil
	}
	a.mu.Unlock()
	if err != nil && aborted {
		err = fmt.Errorf("%w (%w)", errAborted, err)
	}
	if err == nil && (st.Phase == runtime.PhaseFailed || st.Phase == runtime.PhaseExited) {
		err = fmt.Errorf("runtime reported %s: %s", st.Phase, st.Message)
	}
	if err != nil {
		if a.ctx.Err() != nil {
			return st, err
		}
		if serr := a.stop(rt, inst); serr != nil {
			a.log.Warn("rolling back failed start", "instance", inst.ID, "error", serr)
		}
		return st, fmt.Errorf("starting %s: %w", inst.Name, err)
	}
	a.mu.Lock()
	if rs := a.runs[inst.ID]; rs != nil {
		rs.started = time.Now()
	}
	a.mu.Unlock()
	a.update(inst.ID, func(e *Entry) {
		e.Last = LastStatus{Status: workload.StatusRunning, IP: st.IP, Ports: st.Ports, Timings: st.Timings}
	})
	a.log.Info("instance running", "instance", inst.ID, "name", inst.Name, "ip", st.IP)
	return st, nil
}

func (a *agent) stop(rt runtime.Runtime, inst runtime.Instance) error {
	ctx, cancel := context.WithTimeout(a.ctx, a.k.stopTimeout)
	defer cancel()
	if err := rt.Stop(ctx, inst); err != nil {
		return fmt.Errorf("stopping %s: %w", inst.Name, err)
	}
	return nil
}

// failureReason is the short cause of a failed start.
func failureReason(st runtime.Status, err error) string {
	if st.Reason != "" {
		return st.Reason
	}
	var r interface{ Reason() string }
	if errors.As(err, &r) && r.Reason() != "" {
		return r.Reason()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "StartTimeout"
	}
	return "StartFailed"
}

// destroy stops an instance and forgets it.
func (a *agent) destroy(o *workerpb.InstanceScheduling) {
	id := o.GetInstanceId()
	a.mu.Lock()
	e, ok := a.ledger.Get(id)
	if !ok {
		delete(a.runs, id) // the mark dispatch left
		a.queue.push(&commonpb.InstanceMetric{
			Status: commonpb.ResourceStatus_TERMINATED, InstanceId: id, WorkloadId: o.GetWorkloadId(),
			Reason: api.ReasonDestroyed, Message: "not on this node",
		})
		a.mu.Unlock()
		return
	}
	a.mu.Unlock()
	a.update(id, func(e *Entry) { e.Last.Status = workload.StatusDestroying; e.Last.Reason = ""; e.Last.Message = "" })
	a.finishDestroy(e)
}

// forgetter is implemented by runtimes that keep something of a stopped
// instance (its logs) until told the instance is gone for good.
type forgetter interface{ Forget(id string) error }

// api.ReasonDestroyed is the reason of the TERMINATED status of an instance
// the node stopped on request.

// finishDestroy stops a DESTROYING instance, removes it from the ledger and
// reports it TERMINATED. If stopping fails, or there is no runtime to stop
// it (it may still run), it stays DESTROYING and stopping is retried with
// backoff.
func (a *agent) finishDestroy(e Entry) {
	log := a.log.With("instance", e.InstanceID, "name", e.Name)
	rt := a.runtimes[kindOf(e.Kind)]
	err := errors.New(noRuntimeMessage(kindOf(e.Kind)) + " to stop it")
	if rt != nil {
		inst, _ := a.instance(e) // a definition that no longer parses still has an id to stop
		err = a.stop(rt, inst)
	}
	if err != nil {
		if a.ctx.Err() != nil {
			return
		}
		log.Error("destroying instance", "error", err)
		a.update(e.InstanceID, func(e *Entry) { e.Last.Message = err.Error() })
		a.retryDestroy(e.InstanceID)
		return
	}
	// Stop keeps what a restart needs (logs); a destroyed instance needs
	// nothing more.
	if f, ok := rt.(forgetter); ok {
		if err := f.Forget(e.InstanceID); err != nil {
			log.Warn("forgetting destroyed instance", "error", err)
		}
	}
	a.mu.Lock()
	cur, ok := a.ledger.Get(e.InstanceID)
	if !ok {
		a.mu.Unlock()
		return
	}
	a.ledger.Remove(e.InstanceID)
	delete(a.runs, e.InstanceID)
	a.queue.push(&commonpb.InstanceMetric{
		Status: commonpb.ResourceStatus_TERMINATED, InstanceId: cur.InstanceID,
		WorkloadId: cur.WorkloadID, Restarts: int32(cur.Restarts), Reason: api.ReasonDestroyed,
	})
	a.mu.Unlock()
	a.syncLedger()
	log.Info("instance destroyed")
}

// retryDestroy tries destroying again after a backoff delay.
func (a *agent) retryDestroy(id string) {
	a.mu.Lock()
	rs := a.runs[id]
	if rs == nil {
		rs = &runState{}
		a.runs[id] = rs
	}
	delay := restartBackoff(rs.step, a.k.restartBase, a.k.restartMax)
	rs.step++
	a.mu.Unlock()
	a.goAgent(func() {
		if !sleep(a.ctx.Done(), delay) {
			return
		}
		a.serial(id, func() {
			if e, ok := a.get(id); ok && e.Last.Status == workload.StatusDestroying {
				a.finishDestroy(e)
			}
		})
	})
}

// --- what runtimes report on their own

// onRuntimeStatus is the Reporter given to every runtime.
func (a *agent) onRuntimeStatus(st runtime.Status) {
	id := st.InstanceID
	switch st.Phase {
	case runtime.PhaseCreating:
		// Progress: sent, not saved.
		a.mu.Lock()
		defer a.mu.Unlock()
		if e, ok := a.ledger.Get(id); ok && e.Last.Status == workload.StatusCreating {
			e.Last.Message = st.Message
			a.queue.push(metric(e))
		}
	case runtime.PhaseExited, runtime.PhaseFailed:
		a.mu.Lock()
		epoch := -1
		if rs := a.runs[id]; rs != nil {
			if rs.recovering {
				rs.held = &st
				a.mu.Unlock()
				return
			}
			epoch = rs.epoch
		}
		a.mu.Unlock()
		a.serial(id, func() { a.exited(st, epoch) })
	case runtime.PhaseRunning:
		a.serial(id, func() {
			a.mu.Lock()
			e, ok := a.ledger.Get(id)
			a.mu.Unlock()
			if ok && e.Last.Status == workload.StatusRunning && (st.IP != "" && st.IP != e.Last.IP) {
				a.update(id, func(e *Entry) { e.Last.IP = st.IP })
			}
		})
	}
}

// exited handles the end of a running instance's process, reported while
// the instance was in its start number epoch.
func (a *agent) exited(st runtime.Status, epoch int) {
	a.mu.Lock()
	e, ok := a.ledger.Get(st.InstanceID)
	rs := a.runs[st.InstanceID]
	current := rs != nil && rs.epoch == epoch
	a.mu.Unlock()
	if !ok || !current || e.Last.Status != workload.StatusRunning {
		a.log.Debug("exit of an instance not running ignored", "instance", st.InstanceID)
		return
	}
	a.applyExit(e, st)
}

// applyExit applies the restart policy of e to an exit (or failure).
func (a *agent) applyExit(e Entry, st runtime.Status) {
	log := a.log.With("instance", e.InstanceID, "name", e.Name)
	code := 1
	if st.ExitCode != nil {
		code = *st.ExitCode
	}
	inst, err := a.instance(e)
	if err != nil {
		log.Error("instance exited and cannot be restarted", "error", err)
		a.setStatus(e.InstanceID, LastStatus{Status: workload.StatusFailed, Reason: api.ReasonInvalidDefinition, Message: err.Error(), ExitCode: st.ExitCode})
		return
	}
	out := decideExit(inst.Workload.RestartPolicy, code)
	if st.Phase == runtime.PhaseFailed && st.ExitCode == nil && !out.Restart {
		out = exitOutcome{Status: workload.StatusFailed, Reason: api.ReasonError}
	}
	if !out.Restart {
		reason := out.Reason
		if code != 0 && st.Reason != "" {
			reason = st.Reason
		}
		log.Info("instance ended", "code", code, "reason", reason)
		a.setStatus(e.InstanceID, LastStatus{
			Status: out.Status, Reason: reason, Message: st.Message, ExitCode: st.ExitCode,
			IP: e.Last.IP, Ports: e.Last.Ports, Timings: e.Last.Timings,
		})
		return
	}
	why := fmt.Sprintf("exited with code %d", code)
	if st.ExitCode == nil {
		why = "failed"
		if st.Message != "" {
			why += ": " + st.Message
		}
	}
	a.scheduleRestart(e.InstanceID, why, st.ExitCode)
}

// scheduleRestart reports the instance CREATING (BackOff), counts the
// restart and restarts it after the backoff delay.
func (a *agent) scheduleRestart(id, why string, code *int) {
	a.mu.Lock()
	rs := a.runs[id]
	if rs == nil {
		rs = &runState{}
		a.runs[id] = rs
	}
	if !rs.started.IsZero() && time.Since(rs.started) >= a.k.restartReset {
		rs.step = 0
	}
	delay := restartBackoff(rs.step, a.k.restartBase, a.k.restartMax)
	rs.step++
	a.genSeq++
	rs.gen = a.genSeq
	gen := rs.gen
	a.mu.Unlock()

	e, ok := a.update(id, func(e *Entry) {
		e.Restarts++
		e.Last = LastStatus{Status: workload.StatusCreating, Reason: api.ReasonBackOff,
			Message: fmt.Sprintf("%s, restarting in %s", why, delay), ExitCode: code}
	})
	if !ok {
		return
	}
	a.log.Info("restarting instance", "instance", id, "name", e.Name, "why", why, "in", delay, "restarts", e.Restarts)
	a.goAgent(func() {
		if sleep(a.ctx.Done(), delay) {
			a.serial(id, func() { a.restart(id, gen) })
		}
	})
}

// restart stops and starts an instance again, unless it was destroyed or
// restarted otherwise meanwhile.
func (a *agent) restart(id string, gen int) {
	a.mu.Lock()
	e, ok := a.ledger.Get(id)
	rs := a.runs[id]
	valid := ok && rs != nil && rs.gen == gen && e.Last.Status == workload.StatusCreating
	a.mu.Unlock()
	if !valid {
		return
	}
	rt := a.runtimes[kindOf(e.Kind)]
	inst, err := a.instance(e)
	if rt == nil || err != nil {
		if err == nil {
			err = errors.New(noRuntimeMessage(e.Kind))
		}
		a.setStatus(id, LastStatus{Status: workload.StatusFailed, Reason: api.ReasonRestartFailed, Message: err.Error()})
		return
	}
	if err := a.stop(rt, inst); err != nil {
		a.log.Warn("stopping before restart", "instance", id, "error", err)
	}
	if _, err := a.start(rt, inst); err != nil {
		if a.ctx.Err() != nil || errors.Is(err, errAborted) {
			return
		}
		a.scheduleRestart(id, err.Error(), nil)
	}
}

// stopAll stops every owned instance, concurrently, and forgets those
// stopped. It runs once the agent's goroutines have ended (a.ctx is done).
func (a *agent) stopAll() error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, e := range a.ledger.List() {
		wg.Go(func() {
			err := errors.New(noRuntimeMessage(kindOf(e.Kind)))
			if rt := a.runtimes[kindOf(e.Kind)]; rt != nil {
				inst, _ := a.instance(e)
				ctx, cancel := context.WithTimeout(context.WithoutCancel(a.ctx), a.k.stopTimeout)
				err = rt.Stop(ctx, inst)
				cancel()
			}
			if err != nil { // kept: it may still run
				mu.Lock()
				errs = append(errs, fmt.Errorf("stopping %s: %w", e.Name, err))
				mu.Unlock()
				return
			}
			a.ledger.Remove(e.InstanceID)
		})
	}
	wg.Wait()
	if err := a.ledger.Sync(); err != nil {
		errs = append(errs, fmt.Errorf("saving ledger: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stopping instances on exit: %w", err)
	}
	a.log.Info("stopped every instance on exit")
	return nil
}

// --- start-up

// recover lets every runtime adopt what the ledger says the node owns,
// and settles every entry: running ones are RUNNING again, ended ones go
// through their restart policy, those being destroyed are destroyed.
func (a *agent) recover(ctx context.Context) {
	a.mu.Lock()
	entries := a.ledger.List()
	for _, e := range entries {
		a.runs[e.InstanceID] = &runState{recovering: true}
	}
	a.mu.Unlock()
	// An exit reported before its entry is settled (the process ended
	// right after it was adopted) is handled after, not lost nor
	// overwritten by the settling.
	defer func() {
		for _, e := range entries {
			a.mu.Lock()
			rs := a.runs[e.InstanceID]
			var held *runtime.Status
			epoch := 0
			if rs != nil {
				rs.recovering = false
				held, rs.held, epoch = rs.held, nil, rs.epoch
			}
			a.mu.Unlock()
			if held != nil {
				a.serial(e.InstanceID, func() { a.exited(*held, epoch) })
			}
		}
	}()

	byKind := map[workload.Kind][]Entry{}
	for _, e := range entries {
		k := kindOf(e.Kind)
		if a.runtimes[k] == nil {
			a.unsettled(e)
			continue
		}
		byKind[k] = append(byKind[k], e)
	}
	// Every runtime recovers, even with nothing owned: it removes leftovers.
	for k, rt := range a.runtimes {
		es := byKind[k]
		owned := make([]runtime.Instance, 0, len(es))
		for _, e := range es {
			inst, err := a.instance(e)
			if err != nil {
				a.log.Warn("ledger entry with a bad definition", "instance", e.InstanceID, "error", err)
			}
			owned = append(owned, inst)
		}
		sts, err := rt.Recover(ctx, owned)
		if ctx.Err() != nil {
			// Shutting down: what Recover saw is partial (owned instances
			// would look lost). The next start settles every entry.
			a.log.Info("recovery interrupted", "kind", k)
			return
		}
		if err != nil {
			a.log.Error("recovering instances", "kind", k, "error", err)
		}
		byID := map[string]runtime.Status{}
		for _, st := range sts {
			byID[st.InstanceID] = st
		}
		for _, e := range es {
			a.settle(e, byID)
		}
	}
}

// unsettled handles an owned instance of a kind this node has no runtime
// for (now: it failed to start, or is no longer configured). What it runs
// may still run: the entry is neither failed nor dropped. A destroy is
// retried until a runtime can stop it; otherwise its last status stays,
// saying why it cannot be checked.
func (a *agent) unsettled(e Entry) {
	k := kindOf(e.Kind)
	a.log.Warn("owned instance of a kind without runtime: left as it is", "instance", e.InstanceID, "kind", e.Kind, "status", e.Last.Status)
	if e.Last.Status == workload.StatusDestroying {
		a.serial(e.InstanceID, func() { a.finishDestroy(e) })
		return
	}
	if !e.Last.Status.Terminal() {
		a.update(e.InstanceID, func(e *Entry) {
			e.Last.Message = noRuntimeMessage(k) + " now: its state cannot be checked"
		})
	}
}

// settle sets the status of one recovered entry.
func (a *agent) settle(e Entry, byID map[string]runtime.Status) {
	switch e.Last.Status {
	case workload.StatusFailed, workload.StatusTerminated:
		return // ended before: kept until DESTROY
	case workload.StatusDestroying:
		a.serial(e.InstanceID, func() { a.finishDestroy(e) })
		return
	}
	st, ok := byID[e.InstanceID]
	if !ok {
		st = runtime.Status{InstanceID: e.InstanceID, Phase: runtime.PhaseFailed, Reason: api.ReasonLost, Message: "not found after riklet restart"}
	}
	if st.Phase == runtime.PhaseRunning {
		a.mu.Lock()
		a.runs[e.InstanceID].started = time.Now()
		a.mu.Unlock()
		a.update(e.InstanceID, func(e *Entry) {
			e.Last = LastStatus{Status: workload.StatusRunning, IP: st.IP, Ports: st.Ports, Timings: e.Last.Timings}
		})
		a.log.Info("adopted running instance", "instance", e.InstanceID, "name", e.Name)
		return
	}
	if st.Phase != runtime.PhaseExited {
		st.Phase = runtime.PhaseFailed
	}
	a.applyExit(e, st)
}
