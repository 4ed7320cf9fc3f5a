package service

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/atomicfile"
	"github.com/rik-org/rik/internal/errdefs"
	"github.com/rik-org/rik/internal/store"
)

// API tokens are stored under /token/{id}, their secret only as a SHA-256
// hash; several controllers on one etcd share them. A token reads
// "rik_<id>_<secret>": 10 and 26 characters of lowercase base32, the
// secret from 130 random bits.
const (
	tokenPrefix    = "/token/"
	tokenBootstrap = "/token-bootstrap" // compare-and-set guard of the first admin token
	tokenIDLen     = 10
	tokenSecretLen = 26
	// tokenCacheTTL is how long a checked token is trusted without reading
	// the store again: a token deleted through another controller stops
	// working there within this time (at once on the controller that
	// deleted it).
	tokenCacheTTL = 5 * time.Second
)

// errBadToken: missing, malformed, unknown, expired or wrong secret.
var errBadToken = errdefs.Errorf(errdefs.ErrUnauthenticated, "invalid token")

// storedToken is a token as stored.
type storedToken struct {
	ID          string     `json:"id"`
	Role        Role       `json:"role"`
	Description string     `json:"description,omitempty"`
	SecretHash  string     `json:"secretHash"` // hex SHA-256 of the secret
	CreatedAt   time.Time  `json:"createdAt"`
	ExpiresAt   *time.Time `json:"expiresAt,omitempty"`
}

func (t storedToken) expired(now time.Time) bool {
	return t.ExpiresAt != nil && !now.Before(*t.ExpiresAt)
}

// item is t as the API shows it: never its secret.
func (t storedToken) item(now time.Time) api.Item[api.Token] {
	return api.Item[api.Token]{ID: t.ID, Name: t.ID, Value: api.Token{
		Role: string(t.Role), Description: t.Description, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, Expired: t.expired(now),
	}}
}

// newToken makes a token; it returns the whole bearer token (the only time
// the secret exists outside the caller's hands) and the record to store.
func newToken(role Role, description string, ttl time.Duration, now time.Time) (string, storedToken) {
	id := strings.ToLower(rand.Text()[:tokenIDLen])
	secret := strings.ToLower(rand.Text()[:tokenSecretLen])
	t := storedToken{ID: id, Role: role, Description: description, SecretHash: hashSecret(secret), CreatedAt: now}
	if ttl > 0 {
		exp := now.Add(ttl)
		t.ExpiresAt = &exp
	}
	return "rik_" + id + "_" + secret, t
}

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// parseToken splits a bearer token into id and secret.
func parseToken(tok string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(tok, "rik_")
	if !ok {
		return "", "", false
	}
	id, secret, ok = strings.Cut(rest, "_")
	if !ok || len(id) != tokenIDLen || len(secret) != tokenSecretLen || !base32Lower(id) || !base32Lower(secret) {
		return "", "", false
	}
	return id, secret, true
}

func base32Lower(s string) bool {
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}

// tokenKeyOf is the store key of a token id given by a user (or "" if it
// cannot be one); a whole token names its id too.
func tokenKeyOf(ref string) string {
	if id, _, ok := parseToken(ref); ok {
		ref = id
	}
	if len(ref) != tokenIDLen || !base32Lower(ref) {
		return ""
	}
	return tokenPrefix + ref
}

// tokenStore checks and manages the API tokens, with a short cache of
// checked ones.
type tokenStore struct {
	st  store.Store
	now func() time.Time

	mu    sync.Mutex
	cache map[string]cachedToken // id -> token read from the store
}

type cachedToken struct {
	tok  storedToken
	read time.Time
}

func newTokenStore(st store.Store, now func() time.Time) *tokenStore {
	return &tokenStore{st: st, now: now, cache: map[string]cachedToken{}}
}

// verify returns the identity a bearer token gives; every way of being
// wrong is errBadToken. Other errors: the store could not be read.
func (ts *tokenStore) verify(ctx context.Context, bearer string) (Identity, error) {
	id, secret, ok := parseToken(bearer)
	if !ok {
		return Identity{}, errBadToken
	}
	tok, found, err := ts.lookup(ctx, id)
	if err != nil {
		return Identity{}, err
	}
	want := hashSecret(secret)
	if !found {
		tok.SecretHash = strings.Repeat("0", len(want)) // compare anyway: same work
	}
	if subtle.ConstantTimeCompare([]byte(tok.SecretHash), []byte(want)) != 1 || !found || tok.expired(ts.now()) {
		return Identity{}, errBadToken
	}
	return Identity{TokenID: tok.ID, Role: tok.Role}, nil
}

// lookup reads token id, from the cache when fresh.
func (ts *tokenStore) lookup(ctx context.Context, id string) (storedToken, bool, error) {
	now := ts.now()
	ts.mu.Lock()
	c, ok := ts.cache[id]
	ts.mu.Unlock()
	if ok && now.Sub(c.read) < tokenCacheTTL && !now.Before(c.read) {
		return c.tok, true, nil
	}
	kv, err := ts.st.Get(ctx, tokenPrefix+id)
	if errors.Is(err, store.ErrNotFound) {
		ts.forget(id)
		return storedToken{}, false, nil
	}
	if err != nil {
		return storedToken{}, false, fmt.Errorf("reading token %s: %w", id, err)
	}
	var tok storedToken
	if err := json.Unmarshal(kv.Value, &tok); err != nil || tok.ID != id {
		return storedToken{}, false, nil // a damaged record grants nothing
	}
	ts.mu.Lock()
	ts.cache[id] = cachedToken{tok: tok, read: now}
	ts.mu.Unlock()
	return tok, true, nil
}

func (ts *tokenStore) forget(id string) {
	ts.mu.Lock()
	delete(ts.cache, id)
	ts.mu.Unlock()
}

// create stores a new token and returns the bearer token.
func (ts *tokenStore) create(ctx context.Context, role Role, description string, ttl time.Duration) (string, storedToken, error) {
	bearer, tok := newToken(role, description, ttl, ts.now())
	data, err := json.Marshal(tok)
	if err != nil {
		return "", tok, fmt.Errorf("encoding token: %w", err)
	}
	if _, err := ts.st.Put(ctx, tokenPrefix+tok.ID, data, 0); err != nil {
		return "", tok, fmt.Errorf("storing token %s: %w", tok.ID, err)
	}
	return bearer, tok, nil
}

// list returns every token (expired ones too), oldest first.
func (ts *tokenStore) list(ctx context.Context) ([]storedToken, error) {
	kvs, err := ts.st.List(ctx, tokenPrefix)
	if err != nil {
		return nil, fmt.Errorf("listing tokens: %w", err)
	}
	out := make([]storedToken, 0, len(kvs))
	for _, kv := range kvs {
		var t storedToken
		if json.Unmarshal(kv.Value, &t) == nil {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b storedToken) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

// errLastAdmin: deleting the token would leave no usable admin token.
var errLastAdmin = errdefs.Errorf(errdefs.ErrFailedPrecondition, "cannot delete the last admin token (create another admin token first)")

// delete removes the token ref names (id or whole token).
func (ts *tokenStore) delete(ctx context.Context, ref string) error {
	key := tokenKeyOf(ref)
	if key == "" {
		return fmt.Errorf("token %q: %w", ref, errdefs.ErrNotFound)
	}
	id := strings.TrimPrefix(key, tokenPrefix)
	all, err := ts.list(ctx)
	if err != nil {
		return err
	}
	now := ts.now()
	admins, target := 0, storedToken{}
	for _, t := range all {
		if t.ID == id {
			target = t
		}
		if t.Role == RoleAdmin && !t.expired(now) {
			admins++
		}
	}
	if target.ID == "" {
		return fmt.Errorf("token %q: %w", id, errdefs.ErrNotFound)
	}
	if target.Role == RoleAdmin && !target.expired(now) && admins == 1 {
		return errLastAdmin
	}
	if err := ts.st.Delete(ctx, key, store.Any); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("token %q: %w", id, errdefs.ErrNotFound)
		}
		return fmt.Errorf("deleting token %s: %w", id, err)
	}
	ts.forget(id)
	return nil
}

// bootstrapAdmin creates the first admin token when no usable one exists
// and writes it to file (mode 0600). Controllers sharing a store race for
// a compare-and-set on tokenBootstrap: one creates it. It reports whether
// it created one.
func (ts *tokenStore) bootstrapAdmin(ctx context.Context, file string) (bool, error) {
	guard, err := ts.st.Get(ctx, tokenBootstrap)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return false, fmt.Errorf("reading %s: %w", tokenBootstrap, err)
	}
	all, err := ts.list(ctx)
	if err != nil {
		return false, err
	}
	now := ts.now()
	for _, t := range all {
		if t.Role == RoleAdmin && !t.expired(now) {
			return false, nil
		}
	}
	if _, err := ts.st.Put(ctx, tokenBootstrap, []byte(now.Format(time.RFC3339Nano)), guard.Revision); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return false, nil // another controller is creating it
		}
		return false, fmt.Errorf("writing %s: %w", tokenBootstrap, err)
	}
	bearer, tok, err := ts.create(ctx, RoleAdmin, "first admin token, created by the controller", 0)
	if err != nil {
		return false, err
	}
	if err := writeSecretFile(file, bearer); err != nil {
		// Nobody could use it: do not leave it behind.
		if derr := ts.st.Delete(context.WithoutCancel(ctx), tokenPrefix+tok.ID, store.Any); derr != nil {
			err = errors.Join(err, fmt.Errorf("removing the unwritten admin token: %w", derr))
		}
		return false, err
	}
	return true, nil
}

// writeSecretFile writes a token to file, mode 0600, its directory made
// 0700 if missing.
func writeSecretFile(file, secret string) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return fmt.Errorf("writing the admin token: %w", err)
	}
	if err := atomicfile.Write(file, []byte(secret+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing the admin token: %w", err)
	}
	return nil
}

// BootstrapAdminToken creates the first admin token in st when no usable
// one exists, writing it to file (mode 0600), as a controller does when
// it starts; it reports whether it created one.
func BootstrapAdminToken(ctx context.Context, st store.Store, file string) (bool, error) {
	return newTokenStore(st, func() time.Time { return time.Now().UTC() }).bootstrapAdmin(ctx, file)
}

// BootstrapAdmin creates the first admin token when no usable one exists,
// writing it to file (mode 0600); it reports whether it created one.
func (s *Service) BootstrapAdmin(ctx context.Context, file string) (bool, error) {
	return s.tokens.bootstrapAdmin(ctx, file)
}

// VerifyToken returns the identity a bearer token gives. Every way of
// being wrong (missing, malformed, unknown, expired, deleted, wrong
// secret) is the same ErrUnauthenticated; other errors: the store could
// not be read.
func (s *Service) VerifyToken(ctx context.Context, bearer string) (Identity, error) {
	return s.tokens.verify(ctx, bearer)
}

// maxTokenDescription bounds a token's description.
const maxTokenDescription = 256

// checkToken validates a tokens.create request.
func checkToken(req api.CreateTokenRequest) (Role, time.Duration, error) {
	if req.Role == "" {
		return "", 0, invalid("role", "required")
	}
	role, err := ParseRole(req.Role)
	if err != nil {
		return "", 0, invalid("role", err.Error())
	}
	if len(req.Description) > maxTokenDescription {
		return "", 0, invalid("description", fmt.Sprintf("at most %d bytes", maxTokenDescription))
	}
	if strings.IndexFunc(req.Description, unicode.IsControl) >= 0 {
		return "", 0, invalid("description", "must not contain control characters")
	}
	var ttl time.Duration
	if req.TTL != "" {
		if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl < 0 {
			return "", 0, invalid("ttl", `must be a duration such as "24h" or "30m" (0: never expires)`)
		}
	}
	return role, ttl, nil
}

// CreateToken stores a new API token and returns it with, this once, the
// bearer token itself.
func (s *Service) CreateToken(ctx context.Context, req api.CreateTokenRequest) (api.CreatedToken, error) {
	role, ttl, err := checkToken(req)
	if err != nil {
		return api.CreatedToken{}, err
	}
	bearer, tok, err := s.tokens.create(ctx, role, req.Description, ttl)
	if err != nil {
		return api.CreatedToken{}, err
	}
	return api.CreatedToken{Item: tok.item(s.now()), Token: bearer}, nil
}

// ListTokens returns every token (expired ones too), oldest first, without
// their secrets.
func (s *Service) ListTokens(ctx context.Context) ([]api.Item[api.Token], error) {
	all, err := s.tokens.list(ctx)
	if err != nil {
		return nil, err
	}
	now := s.now()
	items := make([]api.Item[api.Token], 0, len(all))
	for _, t := range all {
		items = append(items, t.item(now))
	}
	return items, nil
}

// DeleteToken deletes the token ref names (its id or the whole token) and
// returns its id. Deleting the last usable admin token is
// ErrFailedPrecondition.
func (s *Service) DeleteToken(ctx context.Context, ref string) (string, error) {
	if err := s.tokens.delete(ctx, ref); err != nil {
		return "", err
	}
	return strings.TrimPrefix(tokenKeyOf(ref), tokenPrefix), nil
}
