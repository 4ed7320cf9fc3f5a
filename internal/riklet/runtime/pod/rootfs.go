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

// cgroupRoots are where cgroup hierarchies are mounted (v1 controllers and
// the v2 unified tree).
func cgroupRoots() []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var roots []string
	for _, line := range strings.Split(string(b), "\n") {
		_, after, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		typ := strings.Fields(after)
		f := strings.Fields(line)
		if len(typ) > 0 && (typ[0] == "cgroup" || typ[0] == "cgroup2") && len(f) > 4 {
			roots = append(roots, unescapeMount(f[4]))
		}
	}
	return roots
}

// removeCgroups removes <root>/<parent>/<id> and everything under it, in
// every hierarchy (runc removes the containers' own directories but leaves
// the pod's parent).
func removeCgroups(parent, id string) error {
	var errs []error
	for _, root := range cgroupRoots() {
		dir := filepath.Join(root, parent, id)
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		if err := removeCgroupTree(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeCgroupTree rmdirs a cgroup directory, children first (cgroup
// directories hold only pseudo files, removed with the directory).
func removeCgroupTree(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("reading cgroup %s: %w", dir, err)
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := removeCgroupTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("removing cgroup %s: %w", dir, err)
	}
	return nil
}

// cgroupIDs lists the pod ids that have a cgroup under parent.
func cgroupIDs(parent string) []string {
	seen := map[string]bool{}
	var ids []string
	for _, root := range cgroupRoots() {
		ents, err := os.ReadDir(filepath.Join(root, parent))
		if err != nil {
			continue
		}
		for _, e := range ents {
			if e.IsDir() && !seen[e.Name()] {
				seen[e.Name()] = true
				ids = append(ids, e.Name())
			}
		}
	}
	return ids
}
