package service

import (
	"context"
	"io"

	"github.com/rik-org/rik/internal/errdefs"
)

// LogRequest selects the logs of an instance.
type LogRequest struct {
	InstanceID string
	Container  string // of a pod; "" the first
	Follow     bool
	Tail       int64 // last lines; 0 all
}

// LogChunk is one piece of a log stream as the scheduler relays it from
// the node: data, or the end (EOF), with the node's error if it failed.
type LogChunk struct {
	Data  []byte
	Error string
	EOF   bool
}

// LogStream is a log stream from the scheduler. Recv returns io.EOF once
// the stream ended cleanly.
type LogStream interface {
	Recv() (LogChunk, error)
}

// Logs is the log stream of one instance.
type Logs struct {
	Instance InstanceRecord
	in       LogStream
	end      error // returned once the data before it is read
}

// Logs opens the log stream of the instance ref names (its name or id).
func (s *Service) Logs(ctx context.Context, ref string, req LogRequest) (*Logs, error) {
	rec, _, err := s.repo.findInstance(ctx, ref)
	if err != nil {
		return nil, notFound("instance", ref, err)
	}
	req.InstanceID = rec.ID
	in, err := s.sched.Logs(ctx, req)
	if err != nil {
		return nil, err
	}
	return &Logs{Instance: rec, in: in}, nil
}

// Recv returns the next log bytes. The stream ends with io.EOF, or with
// the error that broke it: the node's (ErrFailedPrecondition: it could
// not serve them) or the scheduler's.
func (l *Logs) Recv() ([]byte, error) {
	if l.end != nil {
		return nil, l.end
	}
	c, err := l.in.Recv()
	if err != nil {
		l.end = err
		return nil, err
	}
	switch {
	case c.Error != "":
		l.end = errdefs.Errorf(errdefs.ErrFailedPrecondition, "logs of %s: %s", l.Instance.Name, c.Error)
	case c.EOF:
		l.end = io.EOF
	}
	if len(c.Data) == 0 && l.end != nil {
		return nil, l.end
	}
	return c.Data, nil
}
