package initramfs

import (
	"fmt"
	"io"
	"strings"
)

// File modes used in cpio headers.
const (
	modeDir  = 0o040000
	modeReg  = 0o100000
	modeChar = 0o020000
	modeLink = 0o120000
)

// CPIOWriter writes a newc ("070701") cpio archive, the format the Linux
// kernel unpacks as an initramfs.
type CPIOWriter struct {
	w   io.Writer
	n   int64
	ino uint32
	err error
}

// NewCPIOWriter returns a writer of a newc archive to w.
func NewCPIOWriter(w io.Writer) *CPIOWriter { return &CPIOWriter{w: w, ino: 1} }

// Dir adds a directory.
func (c *CPIOWriter) Dir(name string, perm uint32) error {
	return c.entry(name, modeDir|perm&0o7777, 0, 0, nil)
}

// File adds a regular file.
func (c *CPIOWriter) File(name string, perm uint32, data []byte) error {
	return c.entry(name, modeReg|perm&0o7777, 0, 0, data)
}

// Symlink adds a symbolic link to target.
func (c *CPIOWriter) Symlink(name, target string) error {
	return c.entry(name, modeLink|0o777, 0, 0, []byte(target))
}

// CharDev adds a character device node.
func (c *CPIOWriter) CharDev(name string, perm uint32, major, minor uint32) error {
	return c.entry(name, modeChar|perm&0o7777, major, minor, nil)
}

// Close writes the trailer. It does not close the underlying writer.
func (c *CPIOWriter) Close() error {
	if err := c.entry("TRAILER!!!", 0, 0, 0, nil); err != nil {
		return err
	}
	// Pad the archive to a multiple of 512 bytes, as cpio(1) does.
	if r := c.n % 512; r != 0 {
		c.write(make([]byte, 512-r))
	}
	return c.err
}

func (c *CPIOWriter) entry(name string, mode, rmajor, rminor uint32, data []byte) error {
	if c.err != nil {
		return c.err
	}
	name = strings.TrimPrefix(name, "/")
	if name == "" || strings.ContainsRune(name, 0) {
		return fmt.Errorf("cpio entry %q: invalid name", name)
	}
	nlink := uint32(1)
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	ino := c.ino
	c.ino++
	if name == "TRAILER!!!" {
		ino, nlink = 0, 1
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmajor, rminor, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write([]byte(name + "\x00"))
	c.pad()
	c.write(data)
	c.pad()
	return c.err
}

func (c *CPIOWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func (c *CPIOWriter) write(b []byte) {
	if c.err != nil || len(b) == 0 {
		return
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	if err != nil {
		c.err = fmt.Errorf("writing cpio: %w", err)
	}
}
