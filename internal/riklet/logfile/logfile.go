// Package logfile reads the log files the runtimes write (container
// output, VM consoles): the last lines, and what a follower has not read
// yet.
package logfile

import (
	"io"
	"os"
)

// TailLines returns the last n lines of b (all of b when n <= 0). A last
// line without its newline counts as a line.
func TailLines(b []byte, n int) []byte {
	if n <= 0 {
		return b
	}
	end := len(b)
	if end > 0 && b[end-1] == '\n' {
		end--
	}
	for i := end - 1; i >= 0; i-- {
		if b[i] == '\n' {
			n--
			if n == 0 {
				return b[i+1:]
			}
		}
	}
	return b
}

// CopyFrom writes what path holds past off to w and returns the offset
// read up to. A file shorter than off was rotated (truncated): it is read
// from its start. On error the offset returned is off.
func CopyFrom(path string, off int64, w io.Writer) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return off, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return off, err
	}
	start := off
	if fi.Size() < start {
		start = 0
	}
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		return off, err
	}
	n, err := io.Copy(w, f)
	return start + n, err
}
