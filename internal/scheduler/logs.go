package scheduler

import (
	"github.com/google/uuid"

	"github.com/rik-org/rik/api/proto/commonpb"
)

// logConn is one node's ServeLogs stream.
type logConn struct {
	node   string
	out    *queue[*commonpb.LogRequest]
	closed *closer // closed when the stream ends or is replaced
}

// logRoute carries the chunks of one GetLogs call.
type logRoute struct {
	id   string
	conn *logConn
	ch   chan *commonpb.LogChunk
	done *closer // closed when the GetLogs call ended
}

// errors returned by openLogs, mapped to gRPC codes by the service.
type logsError int

const (
	logsOK logsError = iota
	logsUnknownInstance
	logsNodeUnavailable
)

// attachLogs makes c the log stream of its node, replacing any previous one.
// The node may not be registered yet: the streams are opened concurrently.
func (s *state) attachLogs(c *logConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.logConns[c.node]; old != nil {
		old.closed.close()
	}
	s.logConns[c.node] = c
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
	r := &logRoute{id: uuid.NewString(), conn: c, ch: make(chan *commonpb.LogChunk, 16), done: newCloser()}
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
// told to stop serving it, if its log stream is still the same.
func (s *state) closeLogs(r *logRoute, ended bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r.done.close()
	delete(s.logRoutes, r.id)
	if !ended && s.logConns[r.conn.node] == r.conn {
		// No instance id: a riklet that predates cancel answers "not
		// found" at once instead of sending the whole log again.
		r.conn.out.push(&commonpb.LogRequest{RequestId: r.id, Cancel: true})
	}
}

// logRoute returns the route of a chunk that came from c, or nil.
func (s *state) logRoute(c *logConn, requestID string) *logRoute {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.logRoutes[requestID]; r != nil && r.conn == c {
		return r
	}
	return nil
}
