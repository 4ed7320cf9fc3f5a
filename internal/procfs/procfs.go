// Package procfs reads what rik needs to know of a host process from
// /proc/<pid>/stat, and waits for a process to end.
package procfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Stat is what rik reads of /proc/<pid>/stat (see proc(5)).
type Stat struct {
	State     byte   // field 3: R, S, D, Z (zombie), T...
	PPid      int    // field 4
	Session   int    // field 6
	StartTime uint64 // field 22: clock ticks since boot, against pid reuse
}

// ParseStat parses the content of /proc/<pid>/stat. The command name
// (field 2) may hold spaces and parentheses: the fields that follow start
// after its last ')'.
func ParseStat(stat string) (Stat, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return Stat{}, errors.New("malformed stat: no command name")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3.
	if len(f) < 20 || len(f[0]) != 1 {
		return Stat{}, errors.New("malformed stat: short")
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return Stat{}, fmt.Errorf("malformed stat: ppid: %w", err)
	}
	sid, err := strconv.Atoi(f[3])
	if err != nil {
		return Stat{}, fmt.Errorf("malformed stat: session: %w", err)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return Stat{}, fmt.Errorf("malformed stat: starttime: %w", err)
	}
	return Stat{State: f[0][0], PPid: ppid, Session: sid, StartTime: start}, nil
}

// ReadStat reads and parses /proc/<pid>/stat.
func ReadStat(pid int) (Stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	st, err := ParseStat(string(b))
	if err != nil {
		return Stat{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	return st, nil
}

// Alive reports whether process pid runs (a zombie has ended) and, when
// startTime is not 0, is the one that started then (not a reuse of pid).
func Alive(pid int, startTime uint64) bool {
	if pid <= 0 {
		return false
	}
	st, err := ReadStat(pid)
	if err != nil || startTime != 0 && st.StartTime != startTime {
		return false
	}
	return st.State != 'Z'
}

// Watch blocks until process pid (started at startTime, 0: any) has ended
// or ctx is done, and returns ctx's error then. It waits on a pidfd when
// it can, else polls /proc. pid need not be a child of ours.
func Watch(ctx context.Context, pid int, startTime uint64) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err == nil {
		defer unix.Close(fd)
		if !Alive(pid, startTime) { // the pid may have been reused before we opened it
			return nil
		}
		for {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, 200)
			if err != nil && !errors.Is(err, unix.EINTR) {
				break // fall back to polling
			}
			if n > 0 {
				return nil
			}
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for Alive(pid, startTime) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
