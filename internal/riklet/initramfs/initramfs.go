// Package initramfs builds the initramfs a Function's microVM boots with: a
// gzip-compressed newc cpio holding /init (a static rik-init), the kernel
// modules a stock distro kernel needs for virtio (/lib/modules/*.ko) and
// /rik/modules.order, the order rik-init loads them in.
package initramfs

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// DefaultModules are the modules a Function guest needs, in load order
// (dependencies first). Modules the kernel has built in are simply absent
// from its modules directory and skipped.
var DefaultModules = []string{
	"virtio_ring", "virtio", "virtio_mmio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
	"failover", "net_failover", "virtio_net", "virtio_blk",
	"crc16", "crc32c_generic", "mbcache", "jbd2", "ext4",
	"button", "evdev",
}

// Options say what goes in the initramfs.
type Options struct {
	Init       string   // path to a static rik-init binary (required)
	ModulesDir string   // lib/modules/<version> of the kernel; "" = no modules
	Modules    []string // module names in load order; nil = DefaultModules
}

// Build writes a gzip-compressed initramfs to w. It returns the names of the
// modules it included.
func Build(ctx context.Context, w io.Writer, opts Options) ([]string, error) {
	initBin, err := os.ReadFile(opts.Init)
	if err != nil {
		return nil, fmt.Errorf("reading init %s: %w", opts.Init, err)
	}
	mods, err := collectModules(ctx, opts)
	if err != nil {
		return nil, err
	}
	zw := gzip.NewWriter(w)
	c := NewCPIOWriter(zw)
	for _, d := range []string{"dev", "proc", "sys", "newroot", "lib", "lib/modules", "rik"} {
		if err := c.Dir(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := c.CharDev("dev/console", 0o600, 5, 1); err != nil {
		return nil, err
	}
	if err := c.CharDev("dev/null", 0o666, 1, 3); err != nil {
		return nil, err
	}
	if err := c.File("init", 0o755, initBin); err != nil {
		return nil, err
	}
	var order strings.Builder
	var names []string
	for _, m := range mods {
		if err := c.File("lib/modules/"+m.file, 0o644, m.data); err != nil {
			return nil, err
		}
		order.WriteString(m.file + "\n")
		names = append(names, m.name)
	}
	if err := c.File("rik/modules.order", 0o644, []byte(order.String())); err != nil {
		return nil, err
	}
	if err := c.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compressing initramfs: %w", err)
	}
	return names, nil
}

// BuildFile builds the initramfs into path, atomically.
func BuildFile(ctx context.Context, path string, opts Options) ([]string, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", filepath.Dir(path), err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".initramfs-*")
	if err != nil {
		return nil, fmt.Errorf("creating initramfs: %w", err)
	}
	defer os.Remove(tmp.Name())
	names, err := Build(ctx, tmp, opts)
	if cerr := tmp.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("writing initramfs: %w", cerr)
	}
	if err != nil {
		return nil, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, fmt.Errorf("installing initramfs %s: %w", path, err)
	}
	return names, nil
}

type module struct {
	name string // virtio_net
	file string // virtio_net.ko or virtio_net.ko.xz
	data []byte
}

// collectModules finds the wanted modules under opts.ModulesDir and
// decompresses them when it can (a compressed module is kept as is
// otherwise; rik-init then asks the kernel to decompress it).
func collectModules(ctx context.Context, opts Options) ([]module, error) {
	if opts.ModulesDir == "" {
		return nil, nil
	}
	want := opts.Modules
	if want == nil {
		want = DefaultModules
	}
	found := map[string]string{}
	err := filepath.WalkDir(opts.ModulesDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if name, ok := moduleName(d.Name()); ok {
			if _, dup := found[name]; !dup {
				found[name] = p
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing modules in %s: %w", opts.ModulesDir, err)
	}
	var mods []module
	for _, w := range want {
		name := strings.ReplaceAll(w, "-", "_")
		p, ok := found[name]
		if !ok {
			continue
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("reading module %s: %w", p, err)
		}
		data, compressed, err := decompressModule(ctx, p, raw)
		if err != nil {
			return nil, fmt.Errorf("decompressing module %s: %w", p, err)
		}
		file := name + ".ko"
		if compressed {
			file = filepath.Base(p)
		}
		mods = append(mods, module{name: name, file: file, data: data})
	}
	return mods, nil
}

// moduleName returns the module name of a file name like virtio-net.ko.xz.
func moduleName(file string) (string, bool) {
	for _, ext := range []string{".ko", ".ko.xz", ".ko.gz", ".ko.zst"} {
		if base, ok := strings.CutSuffix(file, ext); ok && base != "" {
			return strings.ReplaceAll(base, "-", "_"), true
		}
	}
	return "", false
}

// decompressModule returns the plain module, or raw and compressed=true when
// no decompressor is available (xz without the xz tool).
func decompressModule(ctx context.Context, path string, raw []byte) (data []byte, compressed bool, err error) {
	switch {
	case strings.HasSuffix(path, ".ko"):
		return raw, false, nil
	case strings.HasSuffix(path, ".gz"):
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, false, err
		}
		data, err := io.ReadAll(zr)
		return data, false, err
	case strings.HasSuffix(path, ".zst"):
		zr, err := zstd.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, false, err
		}
		defer zr.Close()
		data, err := io.ReadAll(zr)
		return data, false, err
	case strings.HasSuffix(path, ".xz"):
		xz, err := exec.LookPath("xz")
		if err != nil {
			return raw, true, nil
		}
		var out, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, xz, "-dc")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(raw), &out, &stderr
		if err := cmd.Run(); err != nil {
			return nil, false, fmt.Errorf("xz -dc: %w: %s", err, strings.TrimSpace(stderr.String()))
		}
		return out.Bytes(), false, nil
	}
	return nil, false, errors.New("unknown module compression")
}
