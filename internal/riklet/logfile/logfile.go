// Package logfile handles the log files the runtimes write (container
// output, VM consoles): a file written in append mode by its process,
// rotated by size into one older part (<path>.1), read by its last lines
// and followed as it grows.
package logfile

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"time"
)

// FollowInterval is how often Follow looks for more.
const FollowInterval = 200 * time.Millisecond

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

// Rotate moves what path holds to path.1 and empties path when path is
// larger than max. The writer holds path with O_APPEND, so it goes on at
// the new end. A missing path is not an error.
func Rotate(path string, max int64) error {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() <= max {
		return nil
	}
	in, err := os.Open(path)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := path + ".1.tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path+".1"); err != nil {
		return err
	}
	return os.Truncate(path, 0)
}

// Tail writes the last n lines of the log at path (n <= 0: all it keeps,
// its rotated part included) to w and returns the offset in path it read
// up to, where Follow goes on. A missing log is an error satisfying
// errors.Is(err, os.ErrNotExist).
func Tail(path string, n int, w io.Writer) (int64, error) {
	cur, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	b := cur
	if n <= 0 || bytes.Count(cur, []byte("\n")) < n {
		if old, err := os.ReadFile(path + ".1"); err == nil {
			b = append(old, cur...)
		}
	}
	_, err = w.Write(TailLines(b, n))
	return int64(len(cur)), err
}

// Follow writes to w what is appended to the log at path past off, until
// ctx is done, or running reports false and nothing more is to be read.
// A log missing for a while (not made yet, or removed) is waited for
// while running holds.
func Follow(ctx context.Context, path string, off int64, w io.Writer, running func() bool) error {
	tick := time.NewTicker(FollowInterval)
	defer tick.Stop()
	for {
		alive := running() // before reading: what it wrote before it ended is read
		next, err := CopyFrom(path, off, w)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if !alive && next == off {
			return nil
		}
		off = next
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
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
