package vmm

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/klauspost/compress/zstd"

	"github.com/rik-org/rik/internal/atomicfile"
)

// PrepareKernel returns the kernel image to boot: the uncompressed PVH
// vmlinux extracted from the bzImage at path (cached under cacheDir) when
// possible, as it boots faster under QEMU and is what Firecracker needs;
// else path itself. pvh tells which one it is.
func PrepareKernel(ctx context.Context, path, cacheDir string) (kernel string, pvh bool, err error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", false, fmt.Errorf("reading kernel %s: %w", path, err)
	}
	if HasPVHNote(raw) {
		return path, true, nil
	}
	sum := sha256.Sum256(raw)
	out := filepath.Join(cacheDir, "vmlinux-"+hex.EncodeToString(sum[:8]))
	if b, err := os.ReadFile(out); err == nil && HasPVHNote(b) {
		return out, true, nil
	}
	vmlinux, err := ExtractVMLinux(ctx, raw)
	if err != nil || !HasPVHNote(vmlinux) {
		return path, false, nil // the bzImage boots too, only slower
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", false, fmt.Errorf("creating %s: %w", cacheDir, err)
	}
	if err := atomicfile.Write(out, vmlinux, 0o644); err != nil {
		return "", false, fmt.Errorf("installing %s: %w", out, err)
	}
	return out, true, nil
}

// ExtractVMLinux returns the ELF vmlinux inside an x86 bzImage. It supports
// zstd and gzip payloads in Go, and lz4 and xz through the lz4 and xz tools.
func ExtractVMLinux(ctx context.Context, bz []byte) ([]byte, error) {
	if len(bz) < 0x260 || !bytes.Equal(bz[0x202:0x206], []byte("HdrS")) {
		return nil, errors.New("not a bzImage")
	}
	setupSects := int(bz[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	off := (setupSects+1)*512 + int(binary.LittleEndian.Uint32(bz[0x248:]))
	n := int(binary.LittleEndian.Uint32(bz[0x24c:]))
	if off < 0 || n <= 4 || off+n > len(bz) {
		return nil, errors.New("bzImage payload out of range")
	}
	payload := bz[off : off+n]
	var out []byte
	var err error
	switch {
	case bytes.HasPrefix(payload, []byte{0x28, 0xb5, 0x2f, 0xfd}): // zstd
		var d *zstd.Decoder
		d, err = zstd.NewReader(nil, zstd.WithDecoderMaxMemory(1<<30))
		if err == nil {
			out, err = d.DecodeAll(payload[:n-4], nil) // the size is appended
			d.Close()
		}
	case bytes.HasPrefix(payload, []byte{0x1f, 0x8b}): // gzip
		var zr *gzip.Reader
		zr, err = gzip.NewReader(bytes.NewReader(payload))
		if err == nil {
			zr.Multistream(false)
			out, err = io.ReadAll(io.LimitReader(zr, 1<<30))
		}
	case bytes.HasPrefix(payload, []byte{0x02, 0x21, 0x4c, 0x18}): // lz4 legacy
		out, err = filter(ctx, payload[:n-4], "lz4", "-dc")
	case bytes.HasPrefix(payload, []byte{0xfd, '7', 'z', 'X', 'Z', 0}): // xz
		out, err = filter(ctx, payload, "xz", "-dc", "--single-stream")
	default:
		return nil, errors.New("unknown bzImage compression")
	}
	if err != nil {
		return nil, fmt.Errorf("decompressing vmlinux: %w", err)
	}
	if !bytes.HasPrefix(out, []byte("\x7fELF")) {
		return nil, errors.New("decompressed payload is not ELF")
	}
	return out, nil
}

func filter(ctx context.Context, in []byte, tool string, args ...string) ([]byte, error) {
	path, err := exec.LookPath(tool)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdin, cmd.Stdout = bytes.NewReader(in), &out
	if err := cmd.Run(); err != nil && out.Len() == 0 {
		return nil, fmt.Errorf("%s: %w", tool, err)
	}
	return out.Bytes(), nil
}

// HasPVHNote reports whether b is an ELF kernel with the Xen PVH entry note
// (XEN_ELFNOTE_PHYS32_ENTRY), which QEMU and Firecracker need to boot it.
func HasPVHNote(b []byte) bool {
	if !bytes.HasPrefix(b, []byte("\x7fELF")) {
		return false
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return false
	}
	const xenElfnotePhys32Entry = 18
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE || p.Filesz > uint64(len(b)) {
			continue // a size past the file is a malformed header, not a note
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			continue
		}
		for len(data) >= 12 {
			nameSz := binary.LittleEndian.Uint32(data[0:])
			descSz := binary.LittleEndian.Uint32(data[4:])
			typ := binary.LittleEndian.Uint32(data[8:])
			nameEnd := 12 + align4(nameSz)
			end := nameEnd + align4(descSz)
			if nameEnd > uint64(len(data)) || end > uint64(len(data)) {
				break
			}
			name := bytes.TrimRight(data[12:12+uint64(nameSz)], "\x00")
			if string(name) == "Xen" && typ == xenElfnotePhys32Entry {
				return true
			}
			data = data[end:]
		}
	}
	return false
}

func align4(n uint32) uint64 { return (uint64(n) + 3) &^ 3 }
