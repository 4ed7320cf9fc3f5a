// Package rootfs fetches the root filesystems of Functions: from http(s)://
// or file:// URLs, as an ext4 image or a .tar/.tar.gz turned into ext4 with
// mke2fs -d. Images are cached by URL and by content hash (sha256 of what
// was fetched), and each instance gets its own copy (a reflink where the
// filesystem supports it, else a sparse copy), so instances never share a
// writable disk.
package rootfs

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/rik-org/rik/internal/keylock"
	"github.com/rik-org/rik/internal/workload"
)

// Errors callers may map to statuses.
var (
	ErrTooLarge      = errors.New("rootfs larger than the allowed maximum")
	ErrChecksum      = errors.New("rootfs sha256 mismatch")
	ErrUnsupported   = errors.New("unsupported rootfs")
	ErrFetch         = errors.New("fetching rootfs failed")
	DefaultMaxBytes  = int64(2 << 30)
	progressInterval = time.Second
)

// Progress receives human-readable progress ("fetching rootfs: 3.0/40.0 MiB").
type Progress func(msg string)

// Store is a cache of ext4 root filesystem images under a directory.
type Store struct {
	dir    string
	max    int64
	policy FetchPolicy
	log    *slog.Logger
	client *http.Client

	locks keylock.Locker
}

// NewStore returns a store caching images under dir, fetching them as
// policy allows. maxBytes caps both the download and the unpacked size of
// an archive (0: DefaultMaxBytes).
func NewStore(dir string, maxBytes int64, policy FetchPolicy, logger *slog.Logger) (*Store, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	for _, d := range []string{"blobs", "urls", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("creating rootfs cache %s: %w", dir, err)
		}
	}
	// Leftovers of an interrupted fetch.
	if tmps, err := os.ReadDir(filepath.Join(dir, "tmp")); err == nil {
		for _, t := range tmps {
			os.RemoveAll(filepath.Join(dir, "tmp", t.Name()))
		}
	}
	policy = policy.withDefaults()
	return &Store{dir: dir, max: maxBytes, policy: policy, log: logger, client: policy.client()}, nil
}

type urlEntry struct {
	URL          string `json:"url"`
	SHA256       string `json:"sha256"`
	ETag         string `json:"etag,omitempty"`         // http(s)
	LastModified string `json:"lastModified,omitempty"` // http(s)
	Size         int64  `json:"size,omitempty"`         // file://
	ModTime      int64  `json:"modTime,omitempty"`      // file://, unix ns
}

// Fetch returns the path of a cached ext4 image of the rootfs at rawURL,
// fetching and converting it if needed. wantSHA256 (hex, optional) is the
// sha256 of the file at rawURL: an image with that hash in the cache is used
// without asking the source. Otherwise a cached URL is revalidated
// (If-None-Match/If-Modified-Since, or file size and time), and used as is
// if the source cannot be reached. The image is shared: callers Clone it.
// The source must be one the store's FetchPolicy allows, also for an image
// already cached; the whole fetch is bounded by the policy's Timeout.
func (s *Store) Fetch(ctx context.Context, rawURL, wantSHA256 string, progress Progress) (string, error) {
	if progress == nil {
		progress = func(string) {}
	}
	wantSHA256 = strings.ToLower(strings.TrimPrefix(wantSHA256, "sha256:"))
	if wantSHA256 != "" && !validHex(wantSHA256) {
		return "", fmt.Errorf("%w: sha256 %q is not 64 hex digits", ErrUnsupported, wantSHA256)
	}
	u, file, err := s.source(rawURL)
	if err != nil {
		return "", err
	}
	if file != nil {
		defer file.Close()
	}
	ctx, cancel := context.WithTimeout(ctx, s.policy.Timeout)
	defer cancel()
	unlock := s.locks.Lock(rawURL)
	defer unlock()

	urlKey := filepath.Join(s.dir, "urls", hashString(rawURL)+".json")
	var cached *urlEntry
	if wantSHA256 != "" {
		if p := s.blob(wantSHA256); exists(p) {
			return p, nil
		}
	} else if b, err := os.ReadFile(urlKey); err == nil {
		var e urlEntry
		if json.Unmarshal(b, &e) == nil && e.URL == rawURL && exists(s.blob(e.SHA256)) {
			cached = &e
		}
	}
	body, total, meta, err := s.open(ctx, u, file, cached)
	if err != nil {
		if cached != nil && !errors.Is(err, ErrNotAllowed) {
			s.log.Warn("rootfs source unreachable, using the cached image", "url", u.Redacted(), "err", err)
			return s.blob(cached.SHA256), nil
		}
		return "", err
	}
	if body == nil {
		return s.blob(cached.SHA256), nil // not modified
	}
	defer body.Close()

	tmpDir, err := os.MkdirTemp(filepath.Join(s.dir, "tmp"), "fetch-")
	if err != nil {
		return "", fmt.Errorf("creating temp dir: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	raw := filepath.Join(tmpDir, "download")
	sum, size, err := s.download(ctx, body, total, raw, progress)
	if err != nil {
		return "", err
	}
	if wantSHA256 != "" && sum != wantSHA256 {
		// The user may not read the source (a file of the node): its real
		// hash is for the node's log only.
		s.log.Warn("rootfs sha256 mismatch", "url", u.Redacted(), "sha256", sum, "want", wantSHA256)
		return "", ErrChecksum
	}
	final, err := s.keep(ctx, raw, tmpDir, sum, progress)
	if err != nil {
		return "", err
	}
	meta.URL, meta.SHA256 = rawURL, sum
	b, _ := json.Marshal(meta)
	if err := os.WriteFile(urlKey, b, 0o600); err != nil {
		return "", fmt.Errorf("caching rootfs url: %w", err)
	}
	s.log.Info("rootfs cached", "url", u.Redacted(), "sha256", sum, "bytes", size)
	return final, nil
}

func (s *Store) blob(sum string) string { return filepath.Join(s.dir, "blobs", sum+".ext4") }

// keep caches the download at raw (of hash sum) as an ext4 image, unless
// the cache has it already, and returns the image's path.
func (s *Store) keep(ctx context.Context, raw, tmpDir, sum string, progress Progress) (string, error) {
	final := s.blob(sum)
	if exists(final) {
		return final, nil
	}
	img, err := s.toExt4(ctx, raw, tmpDir, progress)
	if err != nil {
		return "", err
	}
	if err := os.Chmod(img, 0o400); err != nil {
		return "", fmt.Errorf("protecting image: %w", err)
	}
	if err := os.Rename(img, final); err != nil {
		return "", fmt.Errorf("caching rootfs image: %w", err)
	}
	return final, nil
}

// source checks rawURL against the store's policy, before anything
// cached is used, and opens a file:// source (nil for http(s)).
func (s *Store) source(rawURL string) (*url.URL, *os.File, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "file") {
		return nil, nil, fmt.Errorf("%w: rootfs URL %q must be http(s):// or file://", ErrUnsupported, rawURL)
	}
	if u.Scheme == "file" {
		f, err := s.policy.openFile(rawURL)
		return u, f, err
	}
	// Names and the rest are judged when connecting (FetchPolicy.control).
	if why := workload.RefusedFetchHost(u.Hostname()); why != "" {
		return nil, nil, fmt.Errorf("%w: %s is %s", ErrNotAllowed, u.Hostname(), why)
	}
	return u, nil, nil
}

// open opens the source at u (file, already open, for file://). When
// cached is set and the source has not changed since, it returns a nil
// body. Connection errors are one message whatever the cause: a refused
// connection, a timeout or a TLS error would tell which ports of which
// hosts are open, and the user who names the URL need not learn that.
func (s *Store) open(ctx context.Context, u *url.URL, file *os.File, cached *urlEntry) (io.ReadCloser, int64, urlEntry, error) {
	var meta urlEntry
	if file != nil {
		st, err := file.Stat()
		if err != nil {
			return nil, 0, meta, fmt.Errorf("%w: %s cannot be read", ErrFetch, u.Path)
		}
		meta.Size, meta.ModTime = st.Size(), st.ModTime().UnixNano()
		if cached != nil && cached.Size == meta.Size && cached.ModTime == meta.ModTime {
			return nil, 0, meta, nil
		}
		return io.NopCloser(file), st.Size(), meta, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, 0, meta, fmt.Errorf("%w: %w", ErrFetch, err)
	}
	if cached != nil {
		if cached.ETag != "" {
			req.Header.Set("If-None-Match", cached.ETag)
		}
		if cached.LastModified != "" {
			req.Header.Set("If-Modified-Since", cached.LastModified)
		}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.log.Warn("fetching rootfs", "url", u.Redacted(), "err", err)
		if errors.Is(err, errAddrRefused) {
			return nil, 0, meta, fmt.Errorf("%w: GET %s: address not allowed by this node's fetch policy", ErrNotAllowed, u.Redacted())
		}
		return nil, 0, meta, fmt.Errorf("%w: GET %s: connection failed", ErrFetch, u.Redacted())
	}
	if resp.StatusCode == http.StatusNotModified && cached != nil {
		resp.Body.Close()
		return nil, 0, meta, nil
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, 0, meta, fmt.Errorf("%w: GET %s: %s", ErrFetch, u.Redacted(), resp.Status)
	}
	meta.ETag, meta.LastModified = resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	return resp.Body, resp.ContentLength, meta, nil
}

// download copies body into path, capped at s.max, and returns its sha256.
// total is the expected size (-1: unknown).
func (s *Store) download(ctx context.Context, body io.Reader, total int64, path string, progress Progress) (string, int64, error) {
	if total > s.max {
		return "", 0, fmt.Errorf("%w: %d bytes, max %d", ErrTooLarge, total, s.max)
	}
	out, err := os.Create(path)
	if err != nil {
		return "", 0, fmt.Errorf("creating %s: %w", path, err)
	}
	defer out.Close()
	h := sha256.New()
	pw := &progressWriter{total: total, report: progress, last: time.Now()}
	n, err := io.Copy(io.MultiWriter(out, h, pw), io.LimitReader(ctxReader{ctx, body}, s.max+1))
	if err != nil {
		return "", 0, fmt.Errorf("%w: %w", ErrFetch, err)
	}
	if n > s.max {
		return "", 0, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, s.max)
	}
	if total >= 0 && n != total {
		return "", 0, fmt.Errorf("%w: got %d of %d bytes", ErrFetch, n, total)
	}
	if err := out.Close(); err != nil {
		return "", 0, fmt.Errorf("writing %s: %w", path, err)
	}
	progress(fmt.Sprintf("fetched rootfs: %s", mib(n)))
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// Format of a fetched rootfs.
type Format int

const (
	FormatUnknown Format = iota
	FormatExt4
	FormatTar
	FormatTarGz
)

// Sniff tells the format of a rootfs from its first 1082+ bytes.
func Sniff(head []byte) Format {
	switch {
	case len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		return FormatTarGz
	case len(head) >= 1082 && head[1080] == 0x53 && head[1081] == 0xEF:
		return FormatExt4
	case len(head) >= 262 && bytes.Equal(head[257:262], []byte("ustar")):
		return FormatTar
	}
	return FormatUnknown
}

// toExt4 returns the path of an ext4 image made from the file at raw.
func (s *Store) toExt4(ctx context.Context, raw, tmpDir string, progress Progress) (string, error) {
	f, err := os.Open(raw)
	if err != nil {
		return "", fmt.Errorf("opening download: %w", err)
	}
	defer f.Close()
	head := make([]byte, 4096)
	n, _ := io.ReadFull(f, head)
	format := Sniff(head[:n])
	if format == FormatExt4 {
		return raw, nil
	}
	if format == FormatUnknown {
		return "", fmt.Errorf("%w: not an ext4 image, tar or tar.gz", ErrUnsupported)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", fmt.Errorf("rewinding download: %w", err)
	}
	var r io.Reader = bufio.NewReader(f)
	if format == FormatTarGz {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return "", fmt.Errorf("%w: %w", ErrUnsupported, err)
		}
		r = zr
	}
	tree := filepath.Join(tmpDir, "tree")
	progress("unpacking rootfs")
	st, err := Extract(ctx, r, tree, s.max)
	if err != nil {
		return "", fmt.Errorf("unpacking rootfs: %w", err)
	}
	progress(fmt.Sprintf("building ext4 image from %d files (%s)", st.Files, mib(st.Bytes)))
	img := filepath.Join(tmpDir, "image.ext4")
	if err := MakeExt4(ctx, tree, img, st); err != nil {
		return "", err
	}
	return img, nil
}

// MakeExt4 builds an ext4 image at img holding the tree at dir, sized for st.
func MakeExt4(ctx context.Context, dir, img string, st ExtractStats) error {
	// Room for metadata and for the guest to write: +30% and 64 MiB.
	sizeMiB := (st.Bytes*13/10)>>20 + 64
	inodes := st.Files*2 + 4096
	cmd := exec.CommandContext(ctx, "mke2fs", "-q", "-F", "-t", "ext4", "-N", fmt.Sprint(inodes),
		"-E", "root_owner=0:0", "-d", dir, img, fmt.Sprintf("%dM", sizeMiB))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mke2fs -d %s: %w: %s", dir, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Clone makes dst a private, writable copy of src: a reflink when the
// filesystem supports it, else a sparse copy.
func Clone(ctx context.Context, src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("cloning rootfs: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("cloning rootfs: %w", err)
	}
	err = cloneInto(ctx, in, out)
	if cerr := out.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
		return fmt.Errorf("cloning rootfs to %s: %w", dst, err)
	}
	return nil
}

func cloneInto(ctx context.Context, in, out *os.File) error {
	if reflink(in, out) == nil {
		return nil
	}
	st, err := in.Stat()
	if err != nil {
		return err
	}
	if err := out.Truncate(st.Size()); err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	// Copy the data extents only (SEEK_DATA/SEEK_HOLE), and within them
	// skip zero blocks, so the copy stays sparse.
	for off := int64(0); off < st.Size(); {
		if err := ctx.Err(); err != nil {
			return err
		}
		start, end := dataExtent(in, off, st.Size())
		if start >= st.Size() {
			break
		}
		for pos := start; pos < end; {
			n := int64(len(buf))
			if end-pos < n {
				n = end - pos
			}
			if _, err := in.ReadAt(buf[:n], pos); err != nil && err != io.EOF {
				return err
			}
			if !isZero(buf[:n]) {
				if _, err := out.WriteAt(buf[:n], pos); err != nil {
					return err
				}
			}
			pos += n
		}
		off = end
	}
	return nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

type progressWriter struct {
	n, total int64
	report   Progress
	last     time.Time
}

func (p *progressWriter) Write(b []byte) (int, error) {
	p.n += int64(len(b))
	if time.Since(p.last) >= progressInterval {
		p.last = time.Now()
		if p.total > 0 {
			p.report(fmt.Sprintf("fetching rootfs: %s/%s", mib(p.n), mib(p.total)))
		} else {
			p.report(fmt.Sprintf("fetching rootfs: %s", mib(p.n)))
		}
	}
	return len(b), nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func hashString(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func validHex(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
