package service

import (
	"errors"
	"io"
	"testing"

	"github.com/rik-org/rik/internal/errdefs"
)

// A log stream gives the data, then how it ended: io.EOF, or the node's
// error (its data first, if it came with some).
func TestLogsRecv(t *testing.T) {
	f := newFixture(t)
	f.workload("web")
	in := f.instances("web", 1)[0]
	for _, tc := range []struct {
		name   string
		chunks []LogChunk
		data   string
		end    error
	}{
		{"clean", []LogChunk{{Data: []byte("a\n")}, {Data: []byte("b\n")}, {EOF: true}}, "a\nb\n", io.EOF},
		{"stream closed", []LogChunk{{Data: []byte("a\n")}}, "a\n", io.EOF},
		{"node error", []LogChunk{{Data: []byte("a\n")}, {Data: []byte("b\n"), Error: "disk gone", EOF: true}}, "a\nb\n", errdefs.ErrFailedPrecondition},
		{"node error only", []LogChunk{{Error: "no container x", EOF: true}}, "", errdefs.ErrFailedPrecondition},
	} {
		f.sched.set(func(s *fakeScheduler) { s.logs = tc.chunks })
		logs, err := f.s.Logs(t.Context(), in.Name, LogRequest{Container: "c"})
		if err != nil || logs.Instance.ID != in.ID {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var data []byte
		for {
			b, err := logs.Recv()
			data = append(data, b...)
			if err != nil {
				if string(data) != tc.data || !errors.Is(err, tc.end) {
					t.Errorf("%s: %q then %v, want %q then %v", tc.name, data, err, tc.data, tc.end)
				}
				if again, _ := logs.Recv(); again != nil {
					t.Errorf("%s: data after the end", tc.name)
				}
				break
			}
		}
	}
	if _, err := f.s.Logs(t.Context(), "nope", LogRequest{}); !errors.Is(err, errdefs.ErrNotFound) || err.Error() != `instance "nope": not found` {
		t.Errorf("logs of an unknown instance: %v", err)
	}
}
