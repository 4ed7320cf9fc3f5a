package vmm

import (
	"io/fs"
	"path"
	"strings"
)

// DefaultKernelDirs are where a guest kernel unpacked by
// test/kernel/fetch.sh DIR (Debian's cloud kernel, not installed) is
// looked for: the one `make dev` fetches, then the one `make test` does.
var DefaultKernelDirs = []string{"/var/cache/rik/kernel", "/var/cache/rik-test/kernel"}

// GuestKernel is a kernel found in a directory.
type GuestKernel struct {
	Path    string // <dir>/boot/vmlinuz-<version>
	Modules string // <dir>/lib/modules/<version>, "" when absent
}

// FindKernel looks in dirs (absolute paths), in order, for
// boot/vmlinuz-<version> and takes the newest version of the first dir
// holding one, with its lib/modules/<version>. fsys is the host's root
// (os.DirFS("/")).
func FindKernel(fsys fs.FS, dirs []string) (GuestKernel, bool) {
	for _, dir := range dirs {
		rel := strings.TrimPrefix(path.Clean(dir), "/")
		matches, err := fs.Glob(fsys, path.Join(rel, "boot", "vmlinuz-*"))
		if err != nil || len(matches) == 0 {
			continue
		}
		best := ""
		for _, m := range matches {
			v := strings.TrimPrefix(path.Base(m), "vmlinuz-")
			if fi, err := fs.Stat(fsys, m); err == nil && fi.Mode().IsRegular() && (best == "" || versionLess(best, v)) {
				best = v
			}
		}
		if best == "" {
			continue
		}
		k := GuestKernel{Path: path.Join(dir, "boot", "vmlinuz-"+best)}
		if fi, err := fs.Stat(fsys, path.Join(rel, "lib", "modules", best)); err == nil && fi.IsDir() {
			k.Modules = path.Join(dir, "lib", "modules", best)
		}
		return k, true
	}
	return GuestKernel{}, false
}

// versionLess compares kernel versions such as 6.1.0-9-cloud-amd64 and
// 6.1.0-10-cloud-amd64: runs of digits by value, the rest as text.
func versionLess(a, b string) bool {
	for a != "" && b != "" {
		na, ra := leadingRun(a)
		nb, rb := leadingRun(b)
		if na != nb {
			if isDigits(na) && isDigits(nb) {
				na, nb = strings.TrimLeft(na, "0"), strings.TrimLeft(nb, "0")
				if len(na) != len(nb) {
					return len(na) < len(nb)
				}
			}
			if na != nb {
				return na < nb
			}
		}
		a, b = ra, rb
	}
	return len(a) < len(b)
}

// leadingRun splits s after its first run of digits or of non-digits.
func leadingRun(s string) (run, rest string) {
	digit := s[0] >= '0' && s[0] <= '9'
	i := 1
	for i < len(s) && (s[i] >= '0' && s[i] <= '9') == digit {
		i++
	}
	return s[:i], s[i:]
}

func isDigits(s string) bool { return s != "" && s[0] >= '0' && s[0] <= '9' }
