// Command release packs rik's cross-compiled binaries into a release: per
// architecture a tar.gz archive and a Debian package (built with nfpm),
// and a SHA256SUMS file over them. `make release` builds the binaries
// (static, one directory per architecture) and runs it:
//
//	go run ./release -root REPO -dist DIR -version V -arch "amd64 arm64"
//
// The output is reproducible: every file carries the time of
// SOURCE_DATE_EPOCH (or -mtime).
package main

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
)

// options are the command line.
type options struct {
	root, dist, version, bins string
	arches                    []string
	mtime                     time.Time
}

func main() {
	o, err := parseOptions(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(2)
	}
	if err := run(o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

func parseOptions(args []string) (options, error) {
	var o options
	var arches, mtime string
	fs := flag.NewFlagSet("release", flag.ContinueOnError)
	fs.StringVar(&o.root, "root", ".", "the repository (packaging/, docs/, LICENSE)")
	fs.StringVar(&o.dist, "dist", "dist", "output directory")
	fs.StringVar(&o.version, "version", "", "the version (git describe)")
	fs.StringVar(&arches, "arch", "amd64 arm64", "architectures (space- or comma-separated)")
	fs.StringVar(&o.bins, "bin", "", "directory of the built binaries, {arch} replaced (default <dist>/linux-{arch})")
	fs.StringVar(&mtime, "mtime", os.Getenv("SOURCE_DATE_EPOCH"), "time of every file, in seconds since 1970 (default SOURCE_DATE_EPOCH, else now)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.arches = strings.FieldsFunc(arches, func(r rune) bool { return r == ' ' || r == ',' })
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	case o.version == "":
		return o, errors.New("-version: required")
	case len(o.arches) == 0:
		return o, errors.New("-arch: required")
	}
	if o.bins == "" {
		o.bins = filepath.Join(o.dist, "linux-{arch}")
	}
	o.mtime = time.Now().UTC().Truncate(time.Second)
	if mtime != "" {
		secs, err := strconv.ParseInt(mtime, 10, 64)
		if err != nil {
			return o, fmt.Errorf("-mtime %q: %w", mtime, err)
		}
		o.mtime = time.Unix(secs, 0).UTC()
	}
	return o, nil
}

// run writes the archives, the packages and SHA256SUMS into o.dist.
func run(o options, out io.Writer) error {
	if err := os.MkdirAll(o.dist, 0o755); err != nil {
		return err
	}
	var made []string
	for _, arch := range o.arches {
		bins := binDir(o.bins, arch)
		tgz := filepath.Join(o.dist, archiveName(o.version, arch)+".tar.gz")
		if err := writeArchive(tgz, o, arch, bins); err != nil {
			return fmt.Errorf("archive for %s: %w", arch, err)
		}
		deb, err := writeDeb(o, arch, bins)
		if err != nil {
			return fmt.Errorf("package for %s: %w", arch, err)
		}
		made = append(made, tgz, deb)
	}
	sums, err := checksums(made)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(o.dist, "SHA256SUMS"), []byte(sums), 0o644); err != nil {
		return err
	}
	for _, m := range made {
		fmt.Fprintln(out, "wrote", m)
	}
	fmt.Fprintln(out, "wrote", filepath.Join(o.dist, "SHA256SUMS"))
	return nil
}

// source is where a file of the release comes from.
func source(o options, bins string, f file) string {
	if f.binary {
		return filepath.Join(bins, f.src)
	}
	return filepath.Join(o.root, f.src)
}

// writeArchive writes a tar.gz with every file under one top directory.
func writeArchive(dst string, o options, arch, bins string) error {
	top := archiveName(o.version, arch)
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	zw := gzip.NewWriter(f) // no name, no time in the header: reproducible
	tw := tar.NewWriter(zw)
	err = func() error {
		dirs := map[string]bool{}
		for _, tf := range tarFiles() {
			for _, d := range parents(top + "/" + tf.dst) {
				if !dirs[d] {
					dirs[d] = true
					if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: o.mtime, Format: tar.FormatPAX}); err != nil {
						return err
					}
				}
			}
			if err := addFile(tw, source(o, bins, tf), top+"/"+tf.dst, tf.mode, o.mtime); err != nil {
				return err
			}
		}
		return nil
	}()
	err = errors.Join(err, tw.Close(), zw.Close(), f.Close())
	if err != nil {
		os.Remove(dst)
	}
	return err
}

// parents lists the directories above name, outermost first.
func parents(name string) []string {
	var ds []string
	for d := filepath.Dir(name); d != "." && d != "/"; d = filepath.Dir(d) {
		ds = append(ds, d)
	}
	slices.Reverse(ds)
	return ds
}

func addFile(tw *tar.Writer, src, name string, mode uint32, mtime time.Time) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(mode), Size: int64(len(b)), ModTime: mtime, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err = tw.Write(b)
	return err
}

// writeDeb builds the Debian package of arch with nfpm and returns its path.
func writeDeb(o options, arch, bins string) (string, error) {
	info := debInfo(o, arch, bins)
	pkgr, err := nfpm.Get("deb")
	if err != nil {
		return "", err
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return "", err
	}
	dst := filepath.Join(o.dist, pkgr.ConventionalFileName(info))
	f, err := os.Create(dst)
	if err != nil {
		return "", err
	}
	info.Target = dst
	err = errors.Join(pkgr.Package(info, f), f.Close())
	if err != nil {
		os.Remove(dst)
		return "", err
	}
	return dst, nil
}

// debInfo describes the package to nfpm.
func debInfo(o options, arch, bins string) *nfpm.Info {
	var contents files.Contents
	for _, f := range debFiles() {
		typ := ""
		if f.kind == config {
			typ = files.TypeConfigNoReplace
		}
		contents = append(contents, &files.Content{
			Source: source(o, bins, f), Destination: f.dst, Type: typ,
			FileInfo: &files.ContentFileInfo{Mode: os.FileMode(f.mode), Owner: "root", Group: "root"},
		})
	}
	recommends := []string{"runc", "iptables", "xz-utils", "e2fsprogs"}
	if arch == "amd64" {
		recommends = append(recommends, "qemu-system-x86")
	}
	return &nfpm.Info{
		Name:          "rik",
		Arch:          arch,
		Platform:      "linux",
		Version:       debVersion(o.version),
		VersionSchema: "none",
		Section:       "admin",
		Priority:      "optional",
		Maintainer:    "rik developers <rik-org@users.noreply.github.com>",
		Homepage:      "https://github.com/rik-org/rik",
		License:       "Apache-2.0",
		Description: "small orchestrator for containers and microVMs\n" +
			"rik runs Pods (OCI containers under runc) and Functions (microVMs under\n" +
			"QEMU or Firecracker) on a fleet of Linux machines: rik-controller (REST\n" +
			"API), rik-scheduler (placement), riklet (node agent), rikctl and rik\n" +
			"(rik dev, rik doctor, rik ca, rik token, rik store). Static binaries.",
		MTime: o.mtime,
		Overridables: nfpm.Overridables{
			Recommends: recommends,
			Suggests:   []string{"etcd-server"},
			Contents:   contents,
			Scripts: nfpm.Scripts{
				PostInstall: filepath.Join(o.root, scripts.postinst),
				PreRemove:   filepath.Join(o.root, scripts.prerm),
				PostRemove:  filepath.Join(o.root, scripts.postrm),
			},
		},
	}
}

// checksums returns SHA256SUMS lines ("<hex>  <name>") for paths, sorted
// by name.
func checksums(paths []string) (string, error) {
	var lines []string
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return "", err
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", err
		}
		lines = append(lines, hex.EncodeToString(h.Sum(nil))+"  "+filepath.Base(p))
	}
	slices.SortFunc(lines, func(a, b string) int { return strings.Compare(a[66:], b[66:]) })
	return strings.Join(lines, "\n") + "\n", nil
}
