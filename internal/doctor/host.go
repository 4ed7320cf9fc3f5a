package doctor

import (
	"os"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"
)

// Real is this machine.
func Real() Host {
	h := Host{
		FS:       os.DirFS("/"),
		LookPath: exec.LookPath,
		Euid:     os.Geteuid(),
		Arch:     runtime.GOARCH,
		OpenRW: func(p string) error {
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err == nil {
				f.Close()
			}
			return err
		},
		Free: func(p string) (uint64, error) {
			var st unix.Statfs_t
			if err := unix.Statfs(p, &st); err != nil {
				return 0, err
			}
			return st.Bavail * uint64(st.Bsize), nil
		},
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		h.Release = unix.ByteSliceToString(u.Release[:])
	}
	h.Executable, _ = os.Executable()
	return h
}
