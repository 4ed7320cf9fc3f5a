package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/rik-org/rik/internal/atomicfile"
)

// TokensFile holds the join tokens, next to the CA.
const TokensFile = "tokens.json"

// ErrBadToken: a join token is malformed, unknown, revoked or expired. The
// caller is not told which.
var ErrBadToken = errors.New("invalid or expired join token")

// JoinToken is a bootstrap token as stored: its secret only hashed.
type JoinToken struct {
	ID          string    `json:"id"`
	SecretHash  string    `json:"secretHash"` // hex SHA-256 of the secret
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
	Expires     time.Time `json:"expires"` // zero: never
}

// Expired reports whether t is expired at now.
func (t JoinToken) Expired(now time.Time) bool {
	return !t.Expires.IsZero() && !now.Before(t.Expires)
}

const (
	tokenIDLen     = 6
	tokenSecretLen = 16
	tokenAlphabet  = "abcdefghijklmnopqrstuvwxyz0123456789"
)

// CreateToken adds a join token to dir's tokens file and returns it whole
// ("<id>.<secret>", kubeadm's form) — the only time the secret is shown.
// ttl 0 means it never expires.
func CreateToken(dir string, ttl time.Duration, description string, now time.Time) (string, JoinToken, error) {
	if ttl < 0 {
		return "", JoinToken{}, errors.New("token ttl: must not be negative")
	}
	id, secret := randomString(tokenIDLen), randomString(tokenSecretLen)
	t := JoinToken{ID: id, SecretHash: hashSecret(secret), Description: description, Created: now.UTC()}
	if ttl > 0 {
		t.Expires = now.Add(ttl).UTC()
	}
	err := updateTokens(dir, func(ts []JoinToken) ([]JoinToken, error) {
		return append(ts, t), nil
	})
	if err != nil {
		return "", JoinToken{}, err
	}
	return id + "." + secret, t, nil
}

// ListTokens lists the tokens of dir, expired ones included.
func ListTokens(dir string) ([]JoinToken, error) {
	return readTokens(dir)
}

// RevokeToken removes the token with id from dir.
func RevokeToken(dir, id string) error {
	id, _, _ = strings.Cut(id, ".") // a whole token names its id too
	return updateTokens(dir, func(ts []JoinToken) ([]JoinToken, error) {
		i := slices.IndexFunc(ts, func(t JoinToken) bool { return t.ID == id })
		if i < 0 {
			return nil, fmt.Errorf("token %q: not found", id)
		}
		return slices.Delete(ts, i, i+1), nil
	})
}

// CheckToken verifies a whole token against dir at now. Every failure is
// ErrBadToken.
func CheckToken(dir, token string, now time.Time) (JoinToken, error) {
	id, secret, ok := strings.Cut(token, ".")
	if !ok || len(id) != tokenIDLen || len(secret) != tokenSecretLen {
		return JoinToken{}, ErrBadToken
	}
	ts, err := readTokens(dir)
	if err != nil {
		return JoinToken{}, fmt.Errorf("reading join tokens: %w", err)
	}
	want := hashSecret(secret)
	for _, t := range ts {
		if t.ID != id {
			continue
		}
		if subtle.ConstantTimeCompare([]byte(t.SecretHash), []byte(want)) != 1 || t.Expired(now) {
			return JoinToken{}, ErrBadToken
		}
		return t, nil
	}
	return JoinToken{}, ErrBadToken
}

func hashSecret(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	for i := range b {
		b[i] = tokenAlphabet[int(b[i])%len(tokenAlphabet)]
	}
	return string(b)
}

func readTokens(dir string) ([]JoinToken, error) {
	data, err := os.ReadFile(filepath.Join(dir, TokensFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ts []JoinToken
	if err := json.Unmarshal(data, &ts); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", TokensFile, err)
	}
	return ts, nil
}

// updateTokens changes the tokens file under an exclusive lock, so that
// two `rik token` commands do not lose each other's change.
func updateTokens(dir string, fn func([]JoinToken) ([]JoinToken, error)) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, TokensFile+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("locking join tokens: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("locking join tokens: %w", err)
	}
	ts, err := readTokens(dir)
	if err != nil {
		return err
	}
	if ts, err = fn(ts); err != nil {
		return err
	}
	if ts == nil {
		ts = []JoinToken{}
	}
	data, err := json.MarshalIndent(ts, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding join tokens: %w", err)
	}
	return atomicfile.Write(filepath.Join(dir, TokensFile), append(data, '\n'), 0o600)
}
