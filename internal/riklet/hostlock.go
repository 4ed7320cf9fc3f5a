package riklet

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultHostLockDir is where riklets take their per-host lock.
const DefaultHostLockDir = "/run/rik"

// ErrHostTaken: another riklet runs in this network namespace.
var ErrHostTaken = errors.New("another riklet runs on this host")

// LockHost makes the calling riklet the only one in its network namespace
// (its host, or the namespace a test or a lab gives each node). A riklet
// owns rik's iptables chains (RIKLET...), its TAPs and the pod bridge of
// its namespace, rebuilding them from its own state: two riklets sharing
// one would erase each other's rules and devices, and `riklet --uninstall`
// would remove what the other uses. So a second riklet (or an uninstall)
// is refused with ErrHostTaken, naming the first one's PID.
//
// The lock is a flock on dir/riklet-netns-<inode>.lock, released by the
// kernel when the process ends however it ends; release drops it sooner.
func LockHost(dir string) (release func(), err error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return nil, fmt.Errorf("locking host: reading network namespace: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("locking host: %w", err)
	}
	path := filepath.Join(dir, fmt.Sprintf("riklet-netns-%d-%d.lock", st.Dev, st.Ino))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("locking host: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			holder := "another process"
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
				holder = "pid " + strconv.Itoa(pid)
			}
			return nil, fmt.Errorf("%w (%s, lock %s): rik's iptables chains, TAPs and pod bridge belong to one riklet "+
				"per network namespace; run one riklet per host, or each in its own network namespace", ErrHostTaken, holder, path)
		}
		return nil, fmt.Errorf("locking host: %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil
}
