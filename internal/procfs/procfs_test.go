package procfs

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	tail := " 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0" // fields 23 to 39, unused
	tests := []struct {
		name string
		in   string
		want Stat
		bad  bool
	}{
		{name: "plain", in: "42 (sleep) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 12345 100 10" + tail,
			want: Stat{State: 'S', PPid: 1, Session: 42, StartTime: 12345}},
		{name: "zombie", in: "7 (sh) Z 3 7 5 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 0 0" + tail,
			want: Stat{State: 'Z', PPid: 3, Session: 5, StartTime: 99}},
		{name: "command with spaces and parentheses", in: "9 (a) b (c) R 2 9 9 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 777 0 0" + tail,
			want: Stat{State: 'R', PPid: 2, Session: 9, StartTime: 777}},
		{name: "command ending in parentheses", in: "1234 (we ird) (name)) S 1 1234 70 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 3 0 42 1000 200" + tail,
			want: Stat{State: 'S', PPid: 1, Session: 70, StartTime: 42}},
		{name: "no command", in: "9 R 2 9 9", bad: true},
		{name: "short", in: "9 (x) R 2 9 9 0", bad: true},
		{name: "bad start time", in: "9 (x) R 2 9 9 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 soon 0 0", bad: true},
		{name: "bad ppid", in: "9 (x) R p 9 9 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 1 0 0", bad: true},
		{name: "empty", in: "", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseStat(tt.in)
			if tt.bad {
				if err == nil {
					t.Fatalf("ParseStat = %+v, want an error", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseStat = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestReadStatAndAlive(t *testing.T) {
	st, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.PPid != os.Getppid() || st.StartTime == 0 {
		t.Errorf("stat of self = %+v, want ppid %d and a start time", st, os.Getppid())
	}
	if !Alive(os.Getpid(), 0) || !Alive(os.Getpid(), st.StartTime) {
		t.Error("self is not alive")
	}
	if Alive(os.Getpid(), st.StartTime+1) {
		t.Error("alive with another start time: a reused pid would pass")
	}
	if Alive(0, 0) || Alive(-1, 0) {
		t.Error("pid 0 or -1 alive")
	}
}

func TestWatch(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skipf("no sleep: %v", err)
	}
	pid := cmd.Process.Pid
	st, err := ReadStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	// Still running: Watch returns with its context.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := Watch(ctx, pid, st.StartTime); err == nil {
		t.Fatal("Watch returned while the process runs")
	}
	cmd.Process.Kill()
	if err := Watch(context.Background(), pid, st.StartTime); err != nil {
		t.Fatalf("Watch of an ended process: %v", err)
	}
	if Alive(pid, st.StartTime) {
		t.Error("a killed process (a zombie until waited for) is alive")
	}
	cmd.Wait()
	// Gone: Watch returns at once, even with a context already done.
	done, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if err := Watch(done, pid, st.StartTime); err != nil {
		t.Errorf("Watch of a reaped process: %v", err)
	}
}
