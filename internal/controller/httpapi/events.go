package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// events streams instance changes as server-sent events: "event: instance"
// with an InstanceItem as data, a keepalive comment when quiet. The
// ": connected" comment is sent once subscribed: every change after it is
// in the stream. A subscriber too slow to keep up is dropped (the stream
// ends).
func (a *API) events(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := a.streamContext(r)
	defer cancel()
	rc := http.NewResponseController(w)
	changes, unsubscribe := a.svc.Subscribe()
	defer unsubscribe()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if a.writeChunk(w, rc, []byte(": connected\n\n")) != nil {
		return
	}
	tick := time.NewTicker(a.cfg.KeepaliveEvery)
	defer tick.Stop()
	for {
		var chunk []byte
		select {
		case <-ctx.Done():
			return
		case rec, ok := <-changes:
			if !ok {
				return // too slow: dropped
			}
			data, err := json.Marshal(rec)
			if err != nil {
				continue
			}
			chunk = fmt.Appendf(nil, "event: instance\ndata: %s\n\n", data)
		case <-tick.C:
			chunk = []byte(": keepalive\n\n")
		}
		if a.writeChunk(w, rc, chunk) != nil {
			return
		}
	}
}
