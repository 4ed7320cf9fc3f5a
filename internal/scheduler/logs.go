package scheduler

import (
	"github.com/google/uuid"

	"github.com/rik-org/rik/api/proto/commonpb"
)

// logConn is one node's ServeLogs stream.
type logConn struct {
	node   string
	key    string // key of the node's certificate ("" in plaintext)
	out    *queue[*commonpb.LogRequest]
	closed *closer // closed when the stream ends or is replaced
}

// logRouteBuffer is how many chunks (of at most 32 KiB from a riklet) may
// wait for one GetLogs caller. When its caller is slower than the node, the
// request is ended rather than stalling the node's other log requests.
const logRouteBuffer = 64

// logRoute carries the chunks of one GetLogs call.
type logRoute struct {
	id      string
	conn    *logConn
	ch      chan *commonpb.LogChunk // bounded; never blocks the node's stream
	tooSlow *closer                 // closed when ch overflowed: the request was cancelled
}

// errors returned by openLogs, mapped to gRPC codes by the service.
type logsError int

const (
	logsOK logsError = iota
	logsUnknownInstance
	logsNodeUnavailable
)

// attachLogs makes c the log stream of its node, replacing any previous one.
// The node may not be registered yet: the streams are opened concurrently;
// once it is, only the holder of its registration's key may attach.
func (s *state) attachLogs(c *logConn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.nodes[c.node]; n != nil {
		if err := speaksFor(n, c.key); err != nil {
			return err
		}
	}
	if old := s.logConns[c.node]; old != nil {
		old.closed.close()
	}
	s.logConns[c.node] = c
	return nil
}

// detachLogs records the end of c.
func (s *state) detachLogs(c *logConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c.closed.close()
	if s.logConns[c.node] == c {
		delete(s.logConns, c.node)
	}
}

// openLogs asks the node running req.instance_id for its logs and returns
// the route its chunks will come back on; call closeLogs when done.
func (s *state) openLogs(req *commonpb.LogRequest) (*logRoute, logsError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst := s.insts[req.GetInstanceId()]
	if inst == nil || inst.phase != phaseAssigned {
		return nil, logsUnknownInstance
	}
	c := s.logConns[inst.node]
	if c == nil {
		return nil, logsNodeUnavailable
	}
	r := &logRoute{id: uuid.NewString(), conn: c, ch: make(chan *commonpb.LogChunk, logRouteBuffer), tooSlow: newCloser()}
	s.logRoutes[r.id] = r
	c.out.push(&commonpb.LogRequest{
		RequestId:  r.id,
		InstanceId: req.GetInstanceId(),
		Container:  req.GetContainer(),
		Follow:     req.GetFollow(),
		Tail:       req.GetTail(),
	})
	return r, logsOK
}

// closeLogs ends route r. When the node did not end the request itself
// (ended false: the caller went away or the scheduler stops), the node is
// told to stop serving it, if its log stream is still the same. A route
// already ended by deliverLog is left alone: its cancel was sent.
func (s *state) closeLogs(r *logRoute, ended bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.logRoutes[r.id] != r {
		return
	}
	delete(s.logRoutes, r.id)
	if !ended {
		s.cancelLogs(r)
	}
}

// cancelLogs tells r's node to stop serving r, if its log stream is still
// the same. Called with s.mu held.
func (s *state) cancelLogs(r *logRoute) {
	if s.logConns[r.conn.node] == r.conn {
		// No instance id: a riklet that predates cancel answers "not
		// found" at once instead of sending the whole log again.
		r.conn.out.push(&commonpb.LogRequest{RequestId: r.id, Cancel: true})
	}
}

// deliverLog hands a chunk that came from c to the route it belongs to,
// without ever blocking: the node's other requests share c. A chunk with no
// route (its caller went away) is dropped. When the route's buffer is full
// its caller is too slow: the route is ended (tooSlow), the node told to
// stop serving it, and its further chunks dropped.
func (s *state) deliverLog(c *logConn, chunk *commonpb.LogChunk) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.logRoutes[chunk.GetRequestId()]
	if r == nil || r.conn != c {
		return
	}
	select {
	case r.ch <- chunk:
		return
	default:
	}
	delete(s.logRoutes, r.id)
	r.tooSlow.close()
	s.cancelLogs(r)
	s.metrics.logReadersTooSlow.Inc()
	s.log.Warn("log reader too slow, request cancelled", "node", c.node, "request", r.id)
}
