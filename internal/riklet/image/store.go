// Package image pulls OCI images by reference from any OCI or Docker
// registry and caches them by digest under a state directory. Layers are
// unpacked once (internal/tarsafe), in overlayfs lower-layer format, and
// shared by every container that uses them.
//
// A layer is unpacked on top of the layers below it, as containerd does: a
// path through a lower layer's symlink (Debian's bin -> usr/bin) lands
// where the symlink points, and a hard link may name a lower layer's file.
// An unpacked layer is thus only valid over the same layers below, and is
// cached by its OCI chain id (its diff id for the lowest layer).
//
// Layout under the store directory:
//
//	refs/<sha256(reference)>   the manifest digest a reference resolved to
//	images/<digest hex>.json   the image's config and ordered layer diff ids
//	layers/<chain id hex>/     one unpacked layer
//	tmp/                       extractions in progress
package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/rik-org/rik/internal/atomicfile"
	"github.com/rik-org/rik/internal/keylock"
	"github.com/rik-org/rik/internal/tarsafe"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// ErrBadReference: the image reference cannot be parsed.
var ErrBadReference = errors.New("bad image reference")

// ErrPull: the image could not be fetched from its registry.
var ErrPull = errors.New("pulling image")

// Options configure a Store.
type Options struct {
	// Insecure lists registries ("host:port") reached over plain HTTP.
	// Loopback registries (localhost, 127.0.0.1) always are.
	Insecure []string
	// Keychain finds registry credentials; default authn.DefaultKeychain
	// (the Docker config file, $DOCKER_CONFIG/config.json).
	Keychain authn.Keychain
	// Logger receives pull progress; default: discard.
	Logger *slog.Logger
	// MaxLayerBytes caps the regular file bytes of one unpacked layer
	// (default tarsafe.DefaultMaxBytes).
	MaxLayerBytes int64
}

// Config is what a container needs from an image's configuration.
type Config struct {
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"workingDir,omitempty"`
	User       string   `json:"user,omitempty"`
}

// Image is a pulled image.
type Image struct {
	Ref     string   `json:"ref"`
	Digest  string   `json:"digest"` // manifest digest, "sha256:..."
	Config  Config   `json:"config"`
	DiffIDs []string `json:"diffIDs"` // lowest layer first
	// Layers are the unpacked layer directories, lowest first.
	Layers []string `json:"-"`
}

// Store is an image cache on disk. It is safe for concurrent use.
type Store struct {
	dir  string
	opts Options
	log  *slog.Logger

	locks keylock.Locker // per reference and per layer
}

// Open opens (creating it if needed) the image store in dir.
func Open(dir string, opts Options) (*Store, error) {
	for _, sub := range []string{"refs", "images", "layers", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("opening image store %s: %w", dir, err)
		}
	}
	// Extractions cut short by a crash are garbage.
	tmps, _ := os.ReadDir(filepath.Join(dir, "tmp"))
	for _, e := range tmps {
		_ = os.RemoveAll(filepath.Join(dir, "tmp", e.Name()))
	}
	if opts.Keychain == nil {
		opts.Keychain = authn.DefaultKeychain
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{dir: dir, opts: opts, log: log}, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// ParseReference parses ref with the store's defaults (docker.io,
// tag latest) and insecure registries.
func (s *Store) ParseReference(ref string) (name.Reference, error) {
	if strings.TrimSpace(ref) == "" {
		return nil, fmt.Errorf("%w: empty", ErrBadReference)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %w", ErrBadReference, ref, err)
	}
	if slices.Contains(s.opts.Insecure, r.Context().RegistryStr()) {
		r, err = name.ParseReference(ref, name.Insecure)
		if err != nil {
			return nil, fmt.Errorf("%w %q: %w", ErrBadReference, ref, err)
		}
	}
	return r, nil
}

// Pull returns the image ref names, fetching and unpacking it unless it is
// already cached: a reference pulled once is not looked up again (like
// Kubernetes' IfNotPresent). progress, if not nil, receives short
// human-readable progress messages.
func (s *Store) Pull(ctx context.Context, ref string, progress func(string)) (Image, error) {
	say := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		s.log.Info(msg, "image", ref)
		if progress != nil {
			progress(msg)
		}
	}
	r, err := s.ParseReference(ref)
	if err != nil {
		return Image{}, err
	}
	unlock := s.locks.Lock("ref:" + r.Name())
	defer unlock()

	if img, err := s.cached(r.Name()); err == nil {
		img.Ref = ref
		return img, nil
	}

	say("pulling %s", ref)
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(s.opts.Keychain),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}),
	}
	rimg, err := remote.Image(r, opts...)
	if err != nil {
		return Image{}, fmt.Errorf("%w %s: %w", ErrPull, ref, err)
	}
	dgst, err := rimg.Digest()
	if err != nil {
		return Image{}, fmt.Errorf("%w %s: digest: %w", ErrPull, ref, err)
	}
	cf, err := rimg.ConfigFile()
	if err != nil {
		return Image{}, fmt.Errorf("%w %s: config: %w", ErrPull, ref, err)
	}
	layers, err := rimg.Layers()
	if err != nil {
		return Image{}, fmt.Errorf("%w %s: layers: %w", ErrPull, ref, err)
	}
	img := Image{
		Ref:    ref,
		Digest: dgst.String(),
		Config: Config{
			Entrypoint: cf.Config.Entrypoint,
			Cmd:        cf.Config.Cmd,
			Env:        cf.Config.Env,
			WorkingDir: cf.Config.WorkingDir,
			User:       cf.Config.User,
		},
	}
	var chain v1.Hash
	for i, l := range layers {
		diffID, err := l.DiffID()
		if err != nil {
			return Image{}, fmt.Errorf("%w %s: layer %d: %w", ErrPull, ref, i+1, err)
		}
		chain = chainID(chain, diffID)
		say("pulling %s: layer %d/%d (%s)", ref, i+1, len(layers), short(diffID.Hex))
		dir, err := s.unpack(ctx, l, img.Layers, diffID, chain)
		if err != nil {
			return Image{}, fmt.Errorf("%w %s: layer %d: %w", ErrPull, ref, i+1, err)
		}
		img.DiffIDs = append(img.DiffIDs, diffID.String())
		img.Layers = append(img.Layers, dir)
	}
	if err := s.record(r.Name(), img); err != nil {
		return Image{}, err
	}
	say("pulled %s (%s)", ref, img.Digest)
	return img, nil
}

func short(hex string) string {
	if len(hex) > 12 {
		return hex[:12]
	}
	return hex
}

// chainID is the OCI chain id of a layer with diffID over the layers whose
// chain id is parent (zero for the lowest layer).
func chainID(parent, diffID v1.Hash) v1.Hash {
	if parent.Hex == "" {
		return diffID
	}
	sum := sha256.Sum256([]byte(parent.String() + " " + diffID.String()))
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

// chainIDs returns the chain ids of an image's diff ids (lowest first).
func chainIDs(diffIDs []string) ([]v1.Hash, error) {
	var chain v1.Hash
	out := make([]v1.Hash, 0, len(diffIDs))
	for _, d := range diffIDs {
		h, err := v1.NewHash(d)
		if err != nil {
			return nil, fmt.Errorf("layer %q: %w", d, err)
		}
		chain = chainID(chain, h)
		out = append(out, chain)
	}
	return out, nil
}

func refKey(ref string) string {
	h := sha256.Sum256([]byte(ref))
	return hex.EncodeToString(h[:])
}

// cached returns the image a normalised reference resolved to, if every
// piece of it is on disk.
func (s *Store) cached(ref string) (Image, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, "refs", refKey(ref)))
	if err != nil {
		return Image{}, err
	}
	return s.Get(strings.TrimSpace(string(b)))
}

// Get returns a cached image by manifest digest.
func (s *Store) Get(digest string) (Image, error) {
	h, err := v1.NewHash(digest)
	if err != nil {
		return Image{}, fmt.Errorf("%w: digest %q: %w", ErrBadReference, digest, err)
	}
	b, err := os.ReadFile(filepath.Join(s.dir, "images", h.Hex+".json"))
	if err != nil {
		return Image{}, fmt.Errorf("reading image %s: %w", digest, err)
	}
	var img Image
	if err := json.Unmarshal(b, &img); err != nil {
		return Image{}, fmt.Errorf("reading image %s: %w", digest, err)
	}
	chains, err := chainIDs(img.DiffIDs)
	if err != nil {
		return Image{}, fmt.Errorf("reading image %s: %w", digest, err)
	}
	for _, c := range chains {
		dir := filepath.Join(s.dir, "layers", c.Hex)
		if _, err := os.Stat(dir); err != nil {
			return Image{}, fmt.Errorf("reading image %s: %w", digest, err)
		}
		img.Layers = append(img.Layers, dir)
	}
	return img, nil
}

func (s *Store) record(ref string, img Image) error {
	h, err := v1.NewHash(img.Digest)
	if err != nil {
		return fmt.Errorf("recording image %s: %w", img.Digest, err)
	}
	b, err := json.Marshal(img)
	if err != nil {
		return fmt.Errorf("recording image %s: %w", img.Digest, err)
	}
	if err := atomicfile.Write(filepath.Join(s.dir, "images", h.Hex+".json"), b, 0o600); err != nil {
		return fmt.Errorf("recording image %s: %w", img.Digest, err)
	}
	if err := atomicfile.Write(filepath.Join(s.dir, "refs", refKey(ref)), []byte(img.Digest), 0o600); err != nil {
		return fmt.Errorf("recording image %s: %w", img.Digest, err)
	}
	return nil
}

// unpack extracts a layer once, over the unpacked layers lowers (lowest
// first) whose chain it ends: into tmp/, then renamed into layers/.
func (s *Store) unpack(ctx context.Context, l v1.Layer, lowers []string, diffID, chain v1.Hash) (string, error) {
	dst := filepath.Join(s.dir, "layers", chain.Hex)
	unlock := s.locks.Lock("layer:" + chain.Hex)
	defer unlock()
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(filepath.Join(s.dir, "tmp"), short(chain.Hex)+"-")
	if err != nil {
		return "", fmt.Errorf("unpacking %s: %w", diffID, err)
	}
	defer os.RemoveAll(tmp)
	rc, err := l.Uncompressed()
	if err != nil {
		return "", fmt.Errorf("fetching %s: %w", diffID, err)
	}
	cr := &ctxReader{ctx: ctx, r: rc}
	_, err = tarsafe.Apply(ctx, tmp, cr, tarsafe.Options{
		Lower:     lowers,
		Whiteouts: tarsafe.WhiteoutOverlay,
		MaxBytes:  s.opts.MaxLayerBytes,
		Logger:    s.log.With("layer", diffID.String()),
	})
	if err == nil {
		// ggcr checks the blob's digest only when its stream reaches EOF,
		// and a tar reader stops at the end-of-archive blocks: read the
		// rest (padding, gzip trailer) so a tampered blob is refused.
		_, err = io.Copy(io.Discard, cr)
	}
	rc.Close()
	if err != nil {
		return "", fmt.Errorf("unpacking %s: %w", diffID, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("unpacking %s: %w", diffID, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", fmt.Errorf("unpacking %s: %w", diffID, err)
	}
	return dst, nil
}

type ctxReader struct {
	ctx context.Context
	r   interface{ Read([]byte) (int, error) }
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// GC removes cached images whose digest is not in keep, and layers no kept
// image uses. References to removed images are forgotten.
func (s *Store) GC(ctx context.Context, keep []string) error {
	usedLayers := map[string]bool{}
	keptImages := map[string]bool{}
	for _, d := range keep {
		img, err := s.Get(d)
		if err != nil {
			continue
		}
		h, _ := v1.NewHash(img.Digest)
		keptImages[h.Hex] = true
		chains, _ := chainIDs(img.DiffIDs) // Get checked them
		for _, c := range chains {
			usedLayers[c.Hex] = true
		}
	}
	refs, _ := os.ReadDir(filepath.Join(s.dir, "refs"))
	for _, e := range refs {
		b, err := os.ReadFile(filepath.Join(s.dir, "refs", e.Name()))
		if err != nil {
			continue
		}
		h, err := v1.NewHash(strings.TrimSpace(string(b)))
		if err != nil || !keptImages[h.Hex] {
			_ = os.Remove(filepath.Join(s.dir, "refs", e.Name()))
		}
	}
	imgs, _ := os.ReadDir(filepath.Join(s.dir, "images"))
	for _, e := range imgs {
		if !keptImages[strings.TrimSuffix(e.Name(), ".json")] {
			_ = os.Remove(filepath.Join(s.dir, "images", e.Name()))
		}
	}
	layers, _ := os.ReadDir(filepath.Join(s.dir, "layers"))
	for _, e := range layers {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !usedLayers[e.Name()] {
			if err := os.RemoveAll(filepath.Join(s.dir, "layers", e.Name())); err != nil {
				return fmt.Errorf("removing layer %s: %w", e.Name(), err)
			}
		}
	}
	return nil
}
