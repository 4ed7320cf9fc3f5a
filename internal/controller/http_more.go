package controller

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
)

// Routes that ask the scheduler (logs, nodes), health and documents.

func (s *Server) handleInstanceLogs(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.streamContext(r)
	defer cancel()
	ref := r.PathValue("id")
	rec, _, err := s.repo.findInstance(ctx, ref)
	if err != nil {
		s.fail(w, r, instanceErr(ref, err))
		return
	}
	q := r.URL.Query()
	req := &commonpb.LogRequest{InstanceId: rec.ID, Container: q.Get("container")}
	if v := q.Get("follow"); v != "" {
		switch v {
		case "true", "1":
			req.Follow = true
		case "false", "0":
		default:
			writeError(w, http.StatusBadRequest, "follow: must be true or false")
			return
		}
	}
	if v := q.Get("tail"); v != "" {
		var n int64
		if _, err := fmt.Sscanf(v, "%d", &n); err != nil || n < 0 || fmt.Sprint(n) != v {
			writeError(w, http.StatusBadRequest, "tail: must be a non-negative integer")
			return
		}
		req.Tail = n
	}
	stream, err := s.link.client.GetLogs(ctx, req)
	if err != nil {
		s.failGRPC(w, r, err)
		return
	}
	chunks := make(chan logItem, 16)
	go pumpLogs(ctx, stream, chunks)

	// Errors (unknown instance, node down) come with the first answer; a
	// quiet followed log must not hold the headers back for long though.
	var first logItem
	timer := time.NewTimer(time.Second)
	defer timer.Stop()
	select {
	case first = <-chunks:
		if first.err != nil && first.err != io.EOF {
			s.failGRPC(w, r, first.err)
			return
		}
		if c := first.chunk; c != nil && c.GetError() != "" && len(c.GetData()) == 0 {
			writeError(w, http.StatusBadGateway, "logs of "+rec.Name+": "+c.GetError())
			return
		}
	case <-timer.C:
	case <-ctx.Done():
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if s.writeChunk(w, rc, nil) != nil {
		return
	}
	item, ok := first, first.chunk != nil || first.err != nil
	for {
		if !ok {
			select {
			case item = <-chunks:
			case <-ctx.Done():
				return
			}
		}
		ok = false
		if item.err != nil {
			if item.err != io.EOF && ctx.Err() == nil {
				s.log.Warn("log stream broken", "instance", rec.Name, "err", item.err)
				_ = s.writeChunk(w, rc, fmt.Appendf(nil, "\n[log stream error: %s]\n", status.Convert(item.err).Message()))
			}
			return
		}
		c := item.chunk
		if len(c.GetData()) > 0 && s.writeChunk(w, rc, c.GetData()) != nil {
			return
		}
		if c.GetError() != "" {
			_ = s.writeChunk(w, rc, fmt.Appendf(nil, "\n[log stream error: %s]\n", c.GetError()))
			return
		}
		if c.GetEof() {
			return
		}
	}
}

// logItem is one received log chunk, or the error ending the stream.
type logItem struct {
	chunk *commonpb.LogChunk
	err   error
}

// pumpLogs receives chunks until the stream ends (the last item carries the
// error, io.EOF for a clean end) or ctx is done.
func pumpLogs(ctx context.Context, stream grpc.ServerStreamingClient[commonpb.LogChunk], out chan<- logItem) {
	for {
		c, err := stream.Recv()
		select {
		case out <- logItem{chunk: c, err: err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// failGRPC maps a scheduler error to HTTP.
func (s *Server) failGRPC(w http.ResponseWriter, r *http.Request, err error) {
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.NotFound:
		writeError(w, http.StatusNotFound, st.Message())
	case codes.Unavailable, codes.DeadlineExceeded:
		writeError(w, http.StatusServiceUnavailable, "scheduler unreachable")
	case codes.Canceled:
	case codes.InvalidArgument:
		writeError(w, http.StatusBadRequest, st.Message())
	default:
		s.log.Error("scheduler call failed", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusBadGateway, "scheduler: "+st.Message())
	}
}

// Resources in API units: cpu millicores, memory and disk MiB.
type Resources struct {
	CPU    int64 `json:"cpu"`
	Memory int64 `json:"memory"`
	Disk   int64 `json:"disk"`
}

// Allocation is what instances placed on a node asked for.
type Allocation struct {
	CPU    int64 `json:"cpu"`
	Memory int64 `json:"memory"`
}

// NodeView is the value of a nodes.list item.
type NodeView struct {
	Name          string            `json:"name"`
	Status        string            `json:"status"`
	Capacity      Resources         `json:"capacity"`
	Usage         Resources         `json:"usage"`
	Allocated     Allocation        `json:"allocated"`
	Kinds         []string          `json:"kinds"`
	Labels        map[string]string `json:"labels"`
	Address       string            `json:"address"`
	Instances     int32             `json:"instances"`
	Load1         float64           `json:"load1"`
	LastHeartbeat string            `json:"lastHeartbeat"`
	// Stale marks a stored record served while the scheduler is
	// unreachable (its status is then Unknown).
	Stale bool `json:"stale,omitempty"`
}

type nodeItem struct {
	ID    string   `json:"id"`
	Name  string   `json:"name"`
	Value NodeView `json:"value"`
}

func resources(r *commonpb.Resources) Resources {
	return Resources{CPU: r.GetCpuMillis(), Memory: r.GetMemoryMib(), Disk: r.GetDiskMib()}
}

func nodeView(n *controllerpb.Node) NodeView {
	v := NodeView{
		Name: n.GetName(), Status: n.GetStatus(),
		Capacity: resources(n.GetCapacity()), Usage: resources(n.GetUsage()), Allocated: Allocation{CPU: n.GetAllocated().GetCpuMillis(), Memory: n.GetAllocated().GetMemoryMib()},
		Kinds: n.GetKinds(), Labels: n.GetLabels(), Address: n.GetAddress(),
		Instances: n.GetInstances(), Load1: n.GetLoad1(),
	}
	if v.Kinds == nil {
		v.Kinds = []string{}
	}
	if v.Labels == nil {
		v.Labels = map[string]string{}
	}
	if ms := n.GetLastHeartbeatUnixMs(); ms > 0 {
		v.LastHeartbeat = time.UnixMilli(ms).UTC().Format(time.RFC3339)
	}
	return v
}

func (s *Server) handleNodesList(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.callTimeout)
	defer cancel()
	list, err := s.link.client.ListNodes(ctx, &emptypb.Empty{})
	if err != nil {
		if c := status.Code(err); c == codes.Unavailable || c == codes.DeadlineExceeded {
			// Serve what the lease holder stored, marked stale.
			items, serr := s.storedNodes(r.Context())
			if serr != nil {
				s.log.Warn("reading stored nodes", "err", serr)
			}
			if len(items) == 0 {
				writeError(w, http.StatusServiceUnavailable, "scheduler unreachable")
				return
			}
			writeJSON(w, http.StatusOK, items)
			return
		}
		s.failGRPC(w, r, err)
		return
	}
	items := make([]nodeItem, 0, len(list.GetNodes()))
	for _, n := range list.GetNodes() {
		items = append(items, nodeItem{ID: n.GetName(), Name: n.GetName(), Value: nodeView(n)})
	}
	writeJSON(w, http.StatusOK, items)
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	sched := "disconnected"
	if s.link.connected.Load() {
		sched = "connected"
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "scheduler": sched, "leader": s.lease.held.Load()})
}

// handleReady says whether this controller can serve: 503 while its link
// to the scheduler is down (orders would only be queued).
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	if !s.link.connected.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "scheduler": "disconnected"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "scheduler": "connected"})
}

func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	serveDoc(w, "application/yaml", openAPIDoc())
}

func (s *Server) handleSchema(w http.ResponseWriter, r *http.Request) {
	serveDoc(w, "application/schema+json", workloadSchemaDoc())
}

func serveDoc(w http.ResponseWriter, contentType string, doc []byte) {
	if len(doc) == 0 {
		writeError(w, http.StatusNotFound, "document not available")
		return
	}
	w.Header().Set("Content-Type", contentType)
	_, _ = w.Write(doc)
}
