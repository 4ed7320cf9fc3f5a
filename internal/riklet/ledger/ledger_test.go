package ledger

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/internal/workload"
)

var discard = slog.New(slog.DiscardHandler)

func open(t testing.TB, path string) *Ledger {
	t.Helper()
	l, err := Open(path, 0, discard)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// drained pops every queued status, as the scheduler session sends them.
func drained(l *Ledger) []string {
	var out []string
	for {
		m, ok := l.Peek()
		if !ok {
			return out
		}
		s := m.GetInstanceId() + ":" + m.GetStatus().String()
		if m.GetReason() != "" {
			s += "(" + m.GetReason() + ")"
		}
		if m.GetMessage() != "" {
			s += " " + m.GetMessage()
		}
		out = append(out, s)
		l.Pop(m)
	}
}

func TestLedgerSavesAndReloads(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ledger.json")
	l := open(t, path)
	if l.Len() != 0 {
		t.Fatalf("new ledger has %d entries", l.Len())
	}
	code := 3
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e1 := Entry{InstanceID: "id1", Name: "web-abcde", WorkloadID: "w", Kind: workload.KindPod,
		Definition: []byte(`{"kind":"Pod"}`), CreatedAt: t0.Add(time.Second), Restarts: 2,
		Last: LastStatus{Status: workload.StatusFailed, Reason: api.ReasonError, ExitCode: &code,
			Ports: []workload.PortMapping{{Port: 80, TargetPort: 8080, Protocol: "TCP"}}}}
	e2 := Entry{InstanceID: "id2", Name: "old", Kind: workload.KindFunction, Definition: []byte(`{}`), CreatedAt: t0}
	for _, e := range []Entry{e1, e2} {
		if err := l.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode: %v %v", fi, err)
	}
	l2 := open(t, path)
	list := l2.List()
	if len(list) != 2 || list[0].InstanceID != "id2" || list[1].Restarts != 2 || *list[1].Last.ExitCode != 3 ||
		string(list[1].Definition) != `{"kind":"Pod"}` || list[1].Last.Ports[0].TargetPort != 8080 {
		t.Fatalf("reloaded = %+v", list)
	}
	if !l2.Remove("id2", LastStatus{Status: workload.StatusTerminated, Reason: api.ReasonDestroyed}) {
		t.Fatal("Remove of an owned entry reported false")
	}
	l3 := open(t, path)
	if _, ok := l3.Get("id2"); ok || l3.Len() != 1 {
		t.Errorf("remove not saved")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 { // ledger.json only
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("temp files left: %v", names)
	}
}

func TestCorruptLedgerMovedAside(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.json")
	if err := os.WriteFile(path, []byte(`{"instances":[`), 0o600); err != nil {
		t.Fatal(err)
	}
	l := open(t, path)
	if l.Len() != 0 {
		t.Fatalf("corrupt ledger loaded %d entries", l.Len())
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("corrupt ledger still in place")
	}
	aside, _ := filepath.Glob(path + ".corrupt-*")
	if len(aside) != 1 {
		t.Fatalf("aside = %v", aside)
	}
	if b, _ := os.ReadFile(aside[0]); string(b) != `{"instances":[` {
		t.Errorf("moved file = %q", b)
	}
	// The ledger works.
	if err := l.Add(Entry{InstanceID: "a"}); err != nil {
		t.Fatal(err)
	}
}

// Every change queues the entry's new status in the same step; a status
// that is progress is sent, not saved.
func TestChangesQueueTheirStatus(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.json")
	l := open(t, path)
	if err := l.Add(Entry{InstanceID: "a", WorkloadID: "w", Last: LastStatus{Status: workload.StatusCreating}}); err != nil {
		t.Fatal(err)
	}
	l.Progress("a", "pulling (1/2 layers)")
	l.Progress("nope", "ignored: not owned")
	if _, ok := l.Update("a", func(e *Entry) { e.Last = LastStatus{Status: workload.StatusRunning, IP: "10.0.0.2"} }); !ok {
		t.Fatal("Update of an owned entry reported false")
	}
	l.Progress("a", "ignored: not CREATING")
	if _, ok := l.Update("nope", func(e *Entry) { t.Error("fn called for an entry not owned") }); ok {
		t.Error("Update of an unknown entry reported true")
	}
	if _, ok := l.Report("a"); !ok {
		t.Error("Report of an owned entry reported false")
	}
	l.Send("x", "w", LastStatus{Status: workload.StatusFailed, Reason: api.ReasonNoRuntime})
	if !l.Remove("a", LastStatus{Status: workload.StatusTerminated, Reason: api.ReasonDestroyed}) || l.Remove("a", LastStatus{}) {
		t.Error("Remove: want true once, then false")
	}
	want := []string{"a:CREATING", "a:CREATING pulling (1/2 layers)", "a:RUNNING", "a:RUNNING", "x:FAILED(NoRuntime)",
		"a:TERMINATED(Destroyed)"}
	if got := drained(l); !slices.Equal(got, want) {
		t.Errorf("queued\n %q\nwant\n %q", got, want)
	}
	var f File
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &f); err != nil || len(f.Instances) != 0 {
		t.Errorf("ledger on disk = %s (%v), want empty", b, err)
	}
}

func TestResendPutsLatestFirst(t *testing.T) {
	l := open(t, filepath.Join(t.TempDir(), "ledger.json"))
	for i, id := range []string{"a", "b"} {
		if err := l.Add(Entry{InstanceID: id, CreatedAt: time.Unix(int64(i), 0), Last: LastStatus{Status: workload.StatusCreating}}); err != nil {
			t.Fatal(err)
		}
	}
	l.Send("gone", "w", LastStatus{Status: workload.StatusTerminated})
	l.Update("b", func(e *Entry) { e.Last.Status = workload.StatusRunning })
	l.Resend()
	if got, want := drained(l), []string{"a:CREATING", "b:RUNNING", "gone:TERMINATED"}; !slices.Equal(got, want) {
		t.Errorf("after Resend %q, want %q", got, want)
	}
	if s := l.Snapshot(); len(s) != 2 || s[0].GetInstanceId() != "a" || s[1].GetStatus() != commonpb.ResourceStatus_RUNNING {
		t.Errorf("snapshot = %v", s)
	}
}

// An entry that cannot be saved is not kept: the node must not run what
// it has not recorded.
func TestAddNotSavedIsDropped(t *testing.T) {
	dir := t.TempDir()
	l := open(t, filepath.Join(dir, "gone", "ledger.json"))
	if err := l.Add(Entry{InstanceID: "a"}); err == nil {
		t.Fatal("Add into a missing directory succeeded")
	}
	if _, ok := l.Get("a"); ok || l.Len() != 0 {
		t.Error("an entry that could not be saved was kept")
	}
	if err := os.Mkdir(filepath.Join(dir, "gone"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(); err != nil {
		t.Fatalf("Sync once the directory exists: %v", err)
	}
	if l2 := open(t, filepath.Join(dir, "gone", "ledger.json")); l2.Len() != 0 {
		t.Errorf("the dropped entry reached the disk")
	}
}

func TestLedgerConcurrentAdds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.json")
	l := open(t, path)
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Go(func() {
			if err := l.Add(Entry{InstanceID: fmt.Sprintf("i%02d", i), Definition: []byte(`{}`)}); err != nil {
				t.Error(err)
			}
			// Once Add returned, the entry is on disk.
			l2, err := Open(path, 0, discard)
			if err != nil {
				t.Error(err)
				return
			}
			if _, ok := l2.Get(fmt.Sprintf("i%02d", i)); !ok {
				t.Errorf("i%02d not on disk after Add", i)
			}
		})
	}
	wg.Wait()
	if l3 := open(t, path); l3.Len() != 50 {
		t.Errorf("%d entries on disk", l3.Len())
	}
}

// BenchmarkLedgerUpdate: one status change saved (atomic write + fsync)
// with 100 instances in the ledger.
func BenchmarkLedgerUpdate(b *testing.B) {
	l := open(b, filepath.Join(b.TempDir(), "ledger.json"))
	def := []byte(`{"apiVersion":"v1","kind":"Pod","name":"web","spec":{"containers":[{"name":"c","image":"alpine:3"}]}}`)
	for i := 0; i < 100; i++ {
		e := Entry{InstanceID: fmt.Sprintf("id-%d", i), Name: "web", Kind: workload.KindPod, Definition: def,
			Last: LastStatus{Status: workload.StatusRunning}, CreatedAt: time.Now()}
		if err := l.Add(e); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l.Update("id-0", func(e *Entry) { e.Restarts = i })
		if m, ok := l.Peek(); ok {
			l.Pop(m)
		}
	}
}
