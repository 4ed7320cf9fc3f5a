package scheduler

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/api/proto/workerpb"
	"github.com/rik-org/rik/internal/scheduler/placement"
)

// api.ReasonNodeLost is the reason of the FAILED status of the instances of a
// node that missed its heartbeats.

// api.ReasonDestroyed is the reason of the TERMINATED status of an instance
// stopped on request.

// tombstoneTTL is how long the scheduler remembers an instance it declared
// lost or destroyed, to tell a node that comes back to destroy it. An
// instance still waiting then for its node to confirm it is stopped is
// declared gone with its node (lost for good).
const tombstoneTTL = 24 * time.Hour

// forgetNodeAfter is how long a lost node stays listed (NotReady); a node
// that comes back later simply registers again.
const forgetNodeAfter = tombstoneTTL

// identifier of the statuses the scheduler emits itself for unplaced instances.
const selfIdentifier = "scheduler"

// Errors of the node identity checks (TLS mode: a node is known by the key
// of its certificate), mapped to gRPC codes by the service.
var (
	// errNameTaken: the name is registered, live, with another key.
	errNameTaken = errors.New("registered by a live node with another certificate")
	// errNotOwner: the name was last registered with another key.
	errNotOwner = errors.New("registered with another certificate")
)

type phase int

const (
	phasePending  phase = iota // waiting for a node that fits
	phaseParked                // waiting, after a restart, for its hinted node to register
	phaseAssigned              // placed on (or adopted from) a node
)

type instance struct {
	id         string
	workloadID string
	name       string
	definition string
	req        placement.Request
	known      bool // definition known; adopted instances have none until the controller re-sends it
	phase      phase
	node       string    // phaseAssigned: the node it runs on
	hint       string    // phaseParked: the node it waits for
	adopters   []string  // the nodes its CREATE said it ran or may still run on: the only ones that may adopt it
	reason     string    // phasePending: why nothing fits
	allocated  bool      // its request is counted in its node's allocation
	destroying bool      // a DESTROY was asked for
	seq        uint64    // arrival order, for fair retries
	createdAt  time.Time // when its CREATE arrived (zero when adopted)
	last       *commonpb.InstanceMetric
	lastSeq    uint64 // the status sequence number of last
}

type node struct {
	name     string
	address  string
	version  string
	labels   map[string]string
	kinds    []string
	capacity *commonpb.Resources
	usage    *commonpb.Resources
	load1    float64
	lastSeen time.Time
	ready    bool
	conn     *workerConn // nil while its Register stream is closed
	key      string      // key of the certificate of its last registration ("" in plaintext)

	allocCPU, allocMem int64
	ports              map[placement.Port]int
	insts              map[string]*instance
}

// workerConn is one Register stream: the orders waiting to go down it.
type workerConn struct {
	out    *queue[*workerpb.InstanceScheduling]
	kicked *closer // closed when the stream is replaced or the node declared lost
}

// state is everything the scheduler knows, behind one mutex. Its methods
// never block: orders go to per-connection queues and statuses to
// per-subscriber queues coalesced by instance.
type state struct {
	mu            sync.Mutex
	log           *slog.Logger
	strategy      placement.Strategy
	nodeTimeout   time.Duration
	goneAfter     time.Duration // a node not heard from for this long is gone for good
	recoveryUntil time.Time
	recovering    bool // parked instances may exist
	coalesceAfter int  // of the status subscribers
	now           func() time.Time
	metrics       *metrics

	seq        uint64 // arrival order of instances
	epoch      string // this run, for the status sequence numbers
	statusSeq  uint64 // sequence number of the last status recorded
	nodes      map[string]*node
	insts      map[string]*instance
	pending    map[string]*instance
	parked     map[string]*instance
	tombstones map[string]*tombstone
	subs       map[*subscriber]struct{}
	logConns   map[string]*logConn // by node name; may come before the registration
	logRoutes  map[string]*logRoute
	network    networkState // the nodes' pod subnets (network.go)
}

func newState(log *slog.Logger, strategy placement.Strategy, nodeTimeout, recovery time.Duration, now func() time.Time) *state {
	s := &state{
		log:           log,
		strategy:      strategy,
		nodeTimeout:   nodeTimeout,
		goneAfter:     DefaultNodeGoneAfter,
		recoveryUntil: now().Add(recovery),
		recovering:    recovery > 0,
		epoch:         newEpoch(),
		coalesceAfter: defaultCoalesceAfter,
		now:           now,
		nodes:         map[string]*node{},
		insts:         map[string]*instance{},
		pending:       map[string]*instance{},
		parked:        map[string]*instance{},
		tombstones:    map[string]*tombstone{},
		subs:          map[*subscriber]struct{}{},
		logConns:      map[string]*logConn{},
		logRoutes:     map[string]*logRoute{},
	}
	s.metrics = newMetrics(s)
	return s
}

// ---- controller side ----

// create handles a CREATE order. req is the parsed definition.
func (s *state) create(ws *controllerpb.WorkloadScheduling, req placement.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := ws.GetInstanceId()
	if inst := s.insts[id]; inst != nil {
		// Duplicate (controller re-subscribed): learn the definition of an
		// adopted instance, and repeat what we know (as a new status, so
		// that the stream stays in sequence order).
		if !inst.known {
			inst.definition, inst.req, inst.known = ws.GetDefinition(), req, true
			inst.name = ws.GetInstanceName()
			inst.adopters = adopters(ws)
			if inst.workloadID == "" {
				inst.workloadID = ws.GetWorkloadId()
			}
			if inst.phase == phaseAssigned && inst.last.GetStatus() != commonpb.ResourceStatus_FAILED {
				s.allocate(inst)
			}
		}
		if inst.last != nil {
			s.record(inst, inst.last)
		}
		return
	}
	if t := s.tombstones[id]; t != nil && t.gone {
		s.log.Info("create of a destroyed instance ignored", "instance", id)
		return
	}
	s.seq++
	inst := &instance{
		id:         id,
		workloadID: ws.GetWorkloadId(),
		name:       ws.GetInstanceName(),
		definition: ws.GetDefinition(),
		req:        req,
		known:      true,
		seq:        s.seq,
		createdAt:  s.now(),
		adopters:   adopters(ws),
	}
	s.insts[id] = inst
	if hint := ws.GetNode(); hint != "" && s.nodes[hint] == nil && s.recovering && s.now().Before(s.recoveryUntil) {
		inst.phase, inst.hint = phaseParked, hint
		s.parked[id] = inst
		s.log.Info("instance waits for its node to re-register", "instance", id, "node", hint)
		return
	}
	inst.phase = phasePending
	s.pending[id] = inst
	views, index := s.views()
	s.place(inst, views, index)
}

// destroy handles a DESTROY order.
func (s *state) destroy(ws *controllerpb.WorkloadScheduling) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := ws.GetInstanceId()
	inst := s.insts[id]
	for _, node := range ws.GetFormerNodes() {
		if inst == nil || inst.phase != phaseAssigned || inst.node != node {
			s.staleCopy(id, node) // the controller saw it there before
		}
	}
	if inst != nil && inst.phase == phaseAssigned {
		inst.destroying = true
		if n := s.nodes[inst.node]; n != nil {
			s.order(n, inst, commonpb.WorkloadRequestKind_DESTROY)
		}
		// Copies where it was lost or moved from are destroyed too, and
		// TERMINATED waits for every node.
		s.destroyCopies(inst, "", "")
		return
	}
	// Not placed (pending, parked) or not known (any more): copies may
	// still run on the node the controller names (an instance that ended
	// on its own is forgotten here but kept by its node until destroyed),
	// the node it waits for, or nodes it was lost with or moved from.
	hint := ws.GetNode()
	if inst == nil {
		inst = &instance{id: id, workloadID: ws.GetWorkloadId()}
	} else {
		if inst.phase == phaseParked {
			hint = inst.hint
		}
		s.forget(inst)
	}
	t := s.destroyCopies(inst, hint, "")
	switch {
	case len(t.nodes) > 0:
	case s.recovering && s.now().Before(s.recoveryUntil):
		// Just restarted: a node not registered yet may run it (placed
		// by the previous scheduler, which died before saying so).
		s.emit(inst, commonpb.ResourceStatus_DESTROYING, "", "", "waiting for the nodes to re-register after a scheduler restart")
	default:
		t.confirmed = true
		s.emit(inst, commonpb.ResourceStatus_TERMINATED, "", api.ReasonDestroyed, "destroyed before being placed")
	}
}

// subscribe adds a status subscriber resuming after the status numbered
// after of the run epoch: it is first sent the last status of every
// instance recorded since (of every instance, for a cursor of another run),
// oldest first: a controller that (re)subscribes learns about instances it
// does not know (and destroys them). It returns the current run and the
// number of its last status (where the replay ends); call unsubscribe when
// done.
func (s *state) subscribe(epoch string, after uint64) (*subscriber, string, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub := newSubscriber(s.coalesceAfter)
	from := replayFrom(s.epoch, epoch, after, s.statusSeq)
	var replay []*instance
	for _, inst := range s.insts {
		if inst.last != nil && inst.lastSeq > from {
			replay = append(replay, inst)
		}
	}
	slices.SortFunc(replay, func(a, b *instance) int { return cmp.Compare(a.lastSeq, b.lastSeq) })
	for _, inst := range replay {
		sub.push(workerStatus(inst.last, inst.lastSeq))
	}
	s.subs[sub] = struct{}{}
	s.metrics.replayed.Add(float64(len(replay)))
	return sub, s.epoch, s.statusSeq
}

// unknown returns the ids, of those given, of the instances the scheduler
// does not have.
func (s *state) unknown(ids []string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, id := range ids {
		if s.insts[id] == nil {
			out = append(out, id)
		}
	}
	return out
}

func (s *state) unsubscribe(sub *subscriber) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.subs, sub)
}

// listNodes describes every node, by name.
func (s *state) listNodes() *controllerpb.NodeList {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := &controllerpb.NodeList{}
	for _, name := range slices.Sorted(maps.Keys(s.nodes)) {
		n := s.nodes[name]
		st := "NotReady"
		if n.ready {
			st = "Ready"
		}
		out.Nodes = append(out.Nodes, &controllerpb.Node{
			Name:                n.name,
			Status:              st,
			Capacity:            cloneResources(n.capacity),
			Usage:               cloneResources(n.usage),
			Allocated:           &commonpb.Resources{CpuMillis: n.allocCPU, MemoryMib: n.allocMem},
			Kinds:               slices.Clone(n.kinds),
			Labels:              maps.Clone(n.labels),
			LastHeartbeatUnixMs: n.lastSeen.UnixMilli(),
			Instances:           int32(len(n.insts)),
			Load1:               n.load1,
			Address:             n.address,
			PodSubnet:           s.network.subnets[n.name],
		})
	}
	return out
}

// ---- worker side ----

// register records a node (re)registration by the holder of key and
// returns its new connection. A live registration under the same name with
// another key is not replaced (errNameTaken); one with the same key is (a
// reconnect). It reconciles what the node says it runs with what the
// scheduler knows.
func (s *state) register(reg *commonpb.WorkerRegistration, key string) (*workerConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := reg.GetHostname()
	n := s.nodes[name]
	if n == nil {
		n = &node{name: name, ports: map[placement.Port]int{}, insts: map[string]*instance{}}
		s.nodes[name] = n
	}
	if n.conn != nil && n.key != key {
		return nil, errNameTaken
	}
	if n.conn != nil {
		n.conn.kicked.close()
	}
	if n.key != key {
		// The name changes hands (a node that re-joined after the old one
		// died): the old holder's log stream goes.
		if n.key != "" {
			s.log.Info("node registers with a new certificate", "node", name, "key", key)
		}
		if lc := s.logConns[name]; lc != nil && lc.key != key {
			lc.closed.close()
			delete(s.logConns, name)
		}
	}
	n.key = key
	c := &workerConn{out: newQueue[*workerpb.InstanceScheduling](), kicked: newCloser()}
	n.conn = c
	n.address, n.version = reg.GetAddress(), reg.GetVersion()
	n.labels = maps.Clone(reg.GetLabels())
	n.kinds = slices.Clone(reg.GetKinds())
	n.capacity = cloneResources(reg.GetCapacity())
	n.lastSeen = s.now()
	if !n.ready {
		s.log.Info("node ready", "node", name, "address", n.address)
	}
	n.ready = true
	s.reconcile(n, reg.GetInstances())
	s.retryPending()
	return c, nil
}

// mayJoin tells whether the holder of key may get a certificate for name:
// not while another key holds a live registration under it.
func (s *state) mayJoin(name, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.nodes[name]; n != nil && n.conn != nil && n.key != key {
		return errNameTaken
	}
	return nil
}

// adopters are the nodes an order says the instance ran on (its hint) or
// may still run a copy on (its former nodes).
func adopters(ws *controllerpb.WorkloadScheduling) []string {
	out := slices.Clone(ws.GetFormerNodes())
	if n := ws.GetNode(); n != "" {
		out = append(out, n)
	}
	return out
}

// mayAdopt reports whether node may take over the unplaced instance inst
// by reporting it: only a node its CREATE named as its node or one of its
// former nodes. Any other node could claim an instance to read its
// definition.
func (s *state) mayAdopt(inst *instance, node string) bool {
	return slices.Contains(inst.adopters, node)
}

// speaksFor tells whether the holder of key speaks for node n (s.mu held):
// it made n's last registration.
func speaksFor(n *node, key string) error {
	if n.key != key {
		return errNotOwner
	}
	return nil
}

// reconcile compares what node n runs (listed) with what the scheduler has.
func (s *state) reconcile(n *node, listed []*commonpb.InstanceMetric) {
	seen := map[string]bool{}
	for _, m := range listed {
		id := m.GetInstanceId()
		if id == "" || seen[id] || m.GetStatus() == commonpb.ResourceStatus_TERMINATED {
			continue
		}
		seen[id] = true
		s.reconcileOne(n, proto.Clone(m).(*commonpb.InstanceMetric))
	}
	for id, inst := range n.insts {
		if seen[id] {
			continue
		}
		switch {
		case inst.destroying:
			s.forget(inst)
			s.destroyed(inst, n.name, nil)
		case inst.known:
			// Placed here but the node does not have it (order lost with the
			// previous stream): ask again; the node handles duplicates.
			s.order(n, inst, commonpb.WorkloadRequestKind_CREATE)
		default:
			s.lose(inst, n.name, "not running on its node any more")
		}
	}
	for id, t := range s.tombstones {
		if _, ok := t.nodes[n.name]; ok && !seen[id] {
			s.copyGone(id, n.name, "not running on its node any more")
		}
	}
	for id, inst := range s.parked {
		if inst.hint != n.name || seen[id] {
			continue
		}
		delete(s.parked, id)
		s.assign(inst, n)
		s.order(n, inst, commonpb.WorkloadRequestKind_CREATE)
		s.emit(inst, commonpb.ResourceStatus_PENDING, n.name, "", "scheduled on "+n.name)
	}
}

// reconcileOne handles one instance node n lists in its registration.
func (s *state) reconcileOne(n *node, m *commonpb.InstanceMetric) {
	id := m.GetInstanceId()
	m.Node = n.name
	inst := s.insts[id]
	if m.GetStatus() == commonpb.ResourceStatus_DESTROYING && (inst == nil || inst.node != n.name) {
		// A copy the node is destroying (ordered before a scheduler
		// restart): never adopted, and waited for if the instance is
		// destroyed meanwhile.
		if s.staleCopy(id, n.name).gone {
			s.order(n, &instance{id: id, workloadID: m.GetWorkloadId()}, commonpb.WorkloadRequestKind_DESTROY)
		}
		return
	}
	switch {
	case inst == nil:
		if t := s.tombstones[id]; t != nil && t.gone {
			s.log.Info("node runs a destroyed instance: destroying it", "node", n.name, "instance", id)
			s.order(n, &instance{id: id, workloadID: m.GetWorkloadId()}, commonpb.WorkloadRequestKind_DESTROY)
			if !t.confirmed {
				s.staleCopy(id, n.name) // its confirmation ends the instance
			}
			return
		}
		// Unknown, or lost with this node: it is back. The controller
		// decides whether it still wants it (it destroys it otherwise).
		s.dropCopy(id, n.name)
		s.seq++
		inst = &instance{id: id, workloadID: m.GetWorkloadId(), seq: s.seq}
		s.insts[id] = inst
		s.assign(inst, n)
		s.log.Info("adopted instance", "node", n.name, "instance", id)
		s.record(inst, m)
	case inst.phase == phaseAssigned && inst.node == n.name:
		if inst.destroying {
			s.order(n, inst, commonpb.WorkloadRequestKind_DESTROY)
		}
		s.account(inst, m.GetStatus())
		if inst.last.GetStatus() != m.GetStatus() {
			s.record(inst, m)
		}
	case inst.phase == phaseAssigned:
		s.log.Info("node runs an instance placed elsewhere: destroying it", "node", n.name, "instance", id, "assigned", inst.node)
		s.order(n, &instance{id: id, workloadID: inst.workloadID, definition: inst.definition}, commonpb.WorkloadRequestKind_DESTROY)
		s.staleCopy(id, n.name)
	case !s.mayAdopt(inst, n.name):
		// Pending, and neither its CREATE nor the scheduler says it ran
		// here: n may not claim it (and so read its definition).
		s.log.Info("node runs an instance it was not given: destroying it", "node", n.name, "instance", id)
		s.order(n, &instance{id: id, workloadID: inst.workloadID}, commonpb.WorkloadRequestKind_DESTROY)
		s.staleCopy(id, n.name)
	default: // pending or parked, known to have run here: it runs here
		delete(s.pending, id)
		delete(s.parked, id)
		s.dropCopy(id, n.name)
		s.assign(inst, n)
		s.account(inst, m.GetStatus())
		s.log.Info("adopted instance", "node", n.name, "instance", id)
		s.record(inst, m)
	}
}

// disconnect records the end of a Register stream. The node keeps its
// instances (the node timeout decides whether it is lost) but gets no new
// placements.
func (s *state) disconnect(name string, c *workerConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.nodes[name]; n != nil && n.conn == c {
		n.conn = nil
		s.log.Info("node disconnected", "node", name)
	}
}

// heartbeat records a WorkerMetric from a node, sent by the holder of key.
func (s *state) heartbeat(name, key string, m *commonpb.WorkerMetric) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nodes[name]
	if n == nil {
		s.log.Debug("heartbeat from an unregistered node", "node", name)
		return nil
	}
	if err := speaksFor(n, key); err != nil {
		return err
	}
	n.lastSeen = s.now()
	more := false
	if c := m.GetCapacity(); c != nil {
		old := n.capacity
		more = c.GetCpuMillis() != old.GetCpuMillis() || c.GetMemoryMib() != old.GetMemoryMib()
		n.capacity = cloneResources(c)
	}
	if u := m.GetUsage(); u != nil {
		n.usage = cloneResources(u)
	}
	n.load1 = m.GetLoad1()
	if k := m.GetKinds(); len(k) > 0 && !slices.Equal(k, n.kinds) {
		n.kinds = slices.Clone(k)
		more = true
	}
	if more && n.ready {
		s.retryPending()
	}
	return nil
}

// instanceStatus records an InstanceMetric sent by node name, by the holder
// of key. A node reports only the instances placed on it, or those pending
// whose CREATE said they ran there (after a scheduler restart).
func (s *state) instanceStatus(name, key string, m *commonpb.InstanceMetric) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := m.GetInstanceId()
	m.Node = name
	n := s.nodes[name]
	inst := s.insts[id]
	alive := m.GetStatus() == commonpb.ResourceStatus_RUNNING || m.GetStatus() == commonpb.ResourceStatus_CREATING
	if n == nil {
		s.log.Debug("status from an unregistered node dropped", "node", name, "instance", id)
		return nil
	}
	if err := speaksFor(n, key); err != nil {
		return err
	}
	n.lastSeen = s.now() // any word from the node shows it alive
	assigned := inst != nil && inst.phase == phaseAssigned && inst.node == name
	switch {
	case m.GetStatus() == commonpb.ResourceStatus_TERMINATED && !assigned:
		s.copyGone(id, name, m.GetMessage())
		return nil
	case assigned && !inst.destroying && (m.GetStatus() == commonpb.ResourceStatus_DESTROYING ||
		(m.GetStatus() == commonpb.ResourceStatus_TERMINATED && m.GetReason() == api.ReasonDestroyed)):
		// The end of a copy destroyed here before the instance was placed
		// here again: not the instance's (its CREATE follows).
		s.log.Debug("status of a destroyed copy dropped", "node", name, "instance", id, "status", m.GetStatus())
		return nil
	case assigned:
	case inst != nil && inst.phase != phaseAssigned && alive && n.ready && s.mayAdopt(inst, name):
		delete(s.pending, id)
		delete(s.parked, id)
		s.dropCopy(id, name)
		s.assign(inst, n)
		s.log.Info("adopted instance", "node", name, "instance", id)
	default:
		s.log.Debug("status from a node the instance is not assigned to dropped",
			"node", name, "instance", id, "status", m.GetStatus())
		// A copy the controller wants gone, or one of an instance placed
		// elsewhere, is destroyed. One lost with this node waits for its
		// re-registration (then the controller decides).
		if t := s.tombstones[id]; alive && ((t != nil && t.gone) || inst != nil) {
			s.order(n, &instance{id: id, workloadID: m.GetWorkloadId()}, commonpb.WorkloadRequestKind_DESTROY)
			s.staleCopy(id, name)
		}
		return nil
	}
	if inst.destroying && m.GetStatus() == commonpb.ResourceStatus_TERMINATED {
		freed := s.account(inst, m.GetStatus())
		s.destroyed(inst, name, m)
		if freed {
			s.retryPending()
		}
		return nil
	}
	freed := s.account(inst, m.GetStatus())
	s.record(inst, m)
	if freed {
		s.retryPending()
	}
	return nil
}

// account updates what inst holds on its node given its status: a FAILED
// instance holds nothing, a TERMINATED one is forgotten, any other holds its
// request. It reports whether resources were freed.
func (s *state) account(inst *instance, st commonpb.ResourceStatus) (freed bool) {
	switch st {
	case commonpb.ResourceStatus_TERMINATED:
		freed = inst.allocated
		s.forget(inst)
	case commonpb.ResourceStatus_FAILED:
		freed = inst.allocated
		s.release(inst)
	default:
		s.allocate(inst)
	}
	return freed
}

// check declares lost the nodes not heard from within the node timeout,
// ends the recovery window, and forgets old tombstones and long lost nodes.
func (s *state) check() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for _, name := range slices.Sorted(maps.Keys(s.nodes)) {
		n := s.nodes[name]
		if n.ready && now.Sub(n.lastSeen) > s.nodeTimeout {
			s.nodeLost(n, now)
		}
		if !n.ready && n.conn == nil && len(n.insts) == 0 && now.Sub(n.lastSeen) > forgetNodeAfter {
			delete(s.nodes, name)
		}
	}
	if s.recovering && !now.Before(s.recoveryUntil) {
		s.recovering = false
		for id, inst := range s.parked {
			delete(s.parked, id)
			s.staleCopy(id, inst.hint) // may come back with it
			inst.phase, inst.hint = phasePending, ""
			s.pending[id] = inst
		}
		for id, t := range s.tombstones {
			if t.gone && !t.confirmed && len(t.nodes) == 0 && s.insts[id] == nil {
				t.confirmed = true // no node came back with it
				s.emit(&instance{id: id}, commonpb.ResourceStatus_TERMINATED, "", api.ReasonDestroyed, "destroyed before being placed")
			}
		}
		s.retryPending()
	}
	s.checkCopies(now)
}

func (s *state) nodeLost(n *node, now time.Time) {
	s.log.Warn("node lost", "node", n.name, "last_seen", n.lastSeen, "instances", len(n.insts))
	s.metrics.nodesLost.Inc()
	n.ready = false
	if n.conn != nil {
		n.conn.kicked.close() // the node must re-register to be Ready again
		n.conn = nil
	}
	msg := fmt.Sprintf("no heartbeat from %s for %s", n.name, now.Sub(n.lastSeen).Round(time.Millisecond))
	for _, id := range slices.Sorted(maps.Keys(n.insts)) {
		inst := n.insts[id]
		if inst.destroying {
			// Not TERMINATED: it may still run there. The node confirms
			// when it is back (or is declared gone for good).
			s.forget(inst)
			s.destroyCopies(inst, n.name, api.ReasonNodeLost)
			continue
		}
		s.lose(inst, n.name, msg)
	}
}

// ---- helpers (s.mu held) ----

// lose forgets inst, tombstones it and reports it FAILED "node lost".
func (s *state) lose(inst *instance, nodeName, msg string) {
	s.forget(inst)
	s.staleCopy(inst.id, nodeName)
	s.emit(inst, commonpb.ResourceStatus_FAILED, nodeName, api.ReasonNodeLost, msg)
}

// retryPending tries to place every pending instance, oldest first.
func (s *state) retryPending() {
	if len(s.pending) == 0 {
		return
	}
	queue := slices.SortedFunc(maps.Values(s.pending), func(a, b *instance) int { return cmp.Compare(a.seq, b.seq) })
	views, index := s.views()
	for _, inst := range queue {
		s.place(inst, views, index)
	}
}

// views describes the nodes for placement; index maps names to positions.
func (s *state) views() ([]placement.Node, map[string]int) {
	views := make([]placement.Node, 0, len(s.nodes))
	index := make(map[string]int, len(s.nodes))
	for _, n := range s.nodes {
		index[n.name] = len(views)
		views = append(views, n.view())
	}
	return views, index
}

// place tries to place the pending instance inst: on success it is assigned,
// its node gets the CREATE order and views are updated; otherwise it stays
// pending and a new reason is reported.
func (s *state) place(inst *instance, views []placement.Node, index map[string]int) {
	name, reason := placement.Place(inst.req, views, s.strategy)
	if name == "" {
		s.metrics.placements.WithLabelValues(resultNoFit).Inc()
		if reason != inst.reason {
			inst.reason = reason
			s.log.Info("instance pending", "instance", inst.id, "reason", reason)
			s.emit(inst, commonpb.ResourceStatus_PENDING, "", reason, "")
		}
		return
	}
	n := s.nodes[name]
	delete(s.pending, inst.id)
	s.assign(inst, n)
	views[index[name]] = n.view()
	s.log.Info("instance placed", "instance", inst.id, "node", name)
	s.metrics.placements.WithLabelValues(resultPlaced).Inc()
	s.metrics.latency.Observe(s.now().Sub(inst.createdAt).Seconds())
	s.order(n, inst, commonpb.WorkloadRequestKind_CREATE)
	s.emit(inst, commonpb.ResourceStatus_PENDING, name, "", "scheduled on "+name)
}

func (n *node) view() placement.Node {
	return placement.Node{
		Name:            n.name,
		Ready:           n.ready,
		Connected:       n.conn != nil,
		Kinds:           n.kinds,
		CPUCapacity:     n.capacity.GetCpuMillis(),
		MemoryCapacity:  n.capacity.GetMemoryMib(),
		CPUAllocated:    n.allocCPU,
		MemoryAllocated: n.allocMem,
		UsedPorts:       n.ports,
		Instances:       len(n.insts),
	}
}

// assign puts inst on n and counts its request.
func (s *state) assign(inst *instance, n *node) {
	inst.phase, inst.node, inst.hint, inst.reason = phaseAssigned, n.name, "", ""
	n.insts[inst.id] = inst
	s.allocate(inst)
}

// allocate counts inst's request on its node, once.
func (s *state) allocate(inst *instance) {
	n := s.nodes[inst.node]
	if inst.allocated || !inst.known || n == nil {
		return
	}
	inst.allocated = true
	n.allocCPU += inst.req.CPUMillis
	n.allocMem += inst.req.MemoryMiB
	for _, p := range inst.req.HostPorts {
		n.ports[p]++
	}
}

// release stops counting inst's request on its node.
func (s *state) release(inst *instance) {
	n := s.nodes[inst.node]
	if !inst.allocated || n == nil {
		return
	}
	inst.allocated = false
	n.allocCPU -= inst.req.CPUMillis
	n.allocMem -= inst.req.MemoryMiB
	for _, p := range inst.req.HostPorts {
		if n.ports[p]--; n.ports[p] <= 0 {
			delete(n.ports, p)
		}
	}
}

// forget removes inst from everything.
func (s *state) forget(inst *instance) {
	s.release(inst)
	if n := s.nodes[inst.node]; n != nil {
		delete(n.insts, inst.id)
	}
	delete(s.insts, inst.id)
	delete(s.pending, inst.id)
	delete(s.parked, inst.id)
}

// order queues an order for node n, if it is connected.
func (s *state) order(n *node, inst *instance, action commonpb.WorkloadRequestKind) {
	if n.conn == nil {
		return
	}
	n.conn.out.push(&workerpb.InstanceScheduling{
		InstanceId:   inst.id,
		Definition:   inst.definition,
		Action:       action,
		WorkloadId:   inst.workloadID,
		InstanceName: inst.name,
	})
}

// emit records and broadcasts a status the scheduler produces itself.
func (s *state) emit(inst *instance, st commonpb.ResourceStatus, nodeName, reason, msg string) {
	s.record(inst, &commonpb.InstanceMetric{
		Status:     st,
		InstanceId: inst.id,
		WorkloadId: inst.workloadID,
		Node:       nodeName,
		Reason:     reason,
		Message:    msg,
	})
}

// record keeps m as inst's last status, numbers it and queues it for every
// subscriber. m must not be modified afterwards.
func (s *state) record(inst *instance, m *commonpb.InstanceMetric) {
	if m.WorkloadId == "" {
		m.WorkloadId = inst.workloadID
	}
	s.statusSeq++
	inst.last, inst.lastSeq = m, s.statusSeq
	ws := workerStatus(m, s.statusSeq)
	for sub := range s.subs {
		if sub.push(ws) {
			s.metrics.coalesced.Inc()
		}
	}
}

// workerStatus wraps m, numbered seq, for the controllers, identified by
// its node.
func workerStatus(m *commonpb.InstanceMetric, seq uint64) *commonpb.WorkerStatus {
	id := m.GetNode()
	if id == "" {
		id = selfIdentifier
	}
	return &commonpb.WorkerStatus{Identifier: id, Status: &commonpb.WorkerStatus_Instance{Instance: m}, Seq: seq}
}

func cloneResources(r *commonpb.Resources) *commonpb.Resources {
	if r == nil {
		return nil
	}
	return proto.Clone(r).(*commonpb.Resources)
}
