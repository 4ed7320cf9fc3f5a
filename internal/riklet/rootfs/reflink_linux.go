package rootfs

import (
	"os"

	"golang.org/x/sys/unix"
)

func reflink(in, out *os.File) error {
	return unix.IoctlFileClone(int(out.Fd()), int(in.Fd()))
}

// dataExtent returns the next extent holding data at or after off, as
// [start, end); where the filesystem cannot tell, everything is data.
func dataExtent(f *os.File, off, size int64) (int64, int64) {
	start, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
	if err != nil {
		if err == unix.ENXIO { // no data past off
			return size, size
		}
		return off, size
	}
	end, err := unix.Seek(int(f.Fd()), start, unix.SEEK_HOLE)
	if err != nil || end > size {
		end = size
	}
	return start, end
}
