package pod

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/rik-org/rik/internal/riklet/image"
	"golang.org/x/sys/unix"
)

// mountRootfs makes bundle/rootfs: an overlay of the image layers with a
// writable upper dir in the bundle, or a flattened copy where overlayfs
// cannot be mounted. It reports whether overlay was used.
func mountRootfs(bundle string, layers []string) (bool, error) {
	rootfs := filepath.Join(bundle, "rootfs")
	upper, work := filepath.Join(bundle, "upper"), filepath.Join(bundle, "work")
	for _, d := range []string{rootfs, upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return false, fmt.Errorf("creating %s: %w", d, err)
		}
	}
	lower := make([]string, len(layers))
	for i, l := range layers {
		lower[len(layers)-1-i] = l // overlay wants the top layer first
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(lower, ":"), upper, work)
	if len(opts) < 4000 {
		err := unix.Mount("overlay", rootfs, "overlay", 0, opts)
		if err == nil {
			return true, nil
		}
	}
	if err := image.Flatten(layers, rootfs); err != nil {
		return false, fmt.Errorf("copying image into %s: %w", rootfs, err)
	}
	return false, nil
}

// unmountRootfs unmounts bundle/rootfs if it is mounted.
func unmountRootfs(bundle string) error {
	rootfs := filepath.Join(bundle, "rootfs")
	err := unix.Unmount(rootfs, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmounting %s: %w", rootfs, err)
	}
	return nil
}

// isMounted reports whether path is a mount point (per /proc/self/mountinfo).
func isMounted(path string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && unescapeMount(f[4]) == path {
			return true
		}
	}
	return false
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// openInRoot opens rel (like "etc/passwd") under root without following any
// symlink, so an image cannot make the riklet read a host file.
func openInRoot(root, rel string) (*os.File, error) {
	p := root
	parts := strings.Split(rel, "/")
	for i, part := range parts {
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		if err != nil {
			return nil, err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return nil, fmt.Errorf("%s: is a symlink", p)
		}
		if i < len(parts)-1 && !fi.IsDir() {
			return nil, fmt.Errorf("%s: not a directory", p)
		}
		if i == len(parts)-1 && !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%s: not a regular file", p)
		}
	}
	return os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
}
