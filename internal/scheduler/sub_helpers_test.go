package scheduler

import "github.com/rik-org/rik/api/proto/commonpb"

// next pops the oldest queued status; nil when none is queued.
func (sub *subscriber) next() *commonpb.WorkerStatus {
	ws, _ := sub.pop()
	return ws
}
