package service

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/store/bolt"
)

func TestRoleAllows(t *testing.T) {
	for _, tc := range []struct {
		have, need Role
		want       bool
	}{
		{RoleAdmin, RoleAdmin, true}, {RoleAdmin, RoleOperator, true}, {RoleAdmin, RoleViewer, true},
		{RoleOperator, RoleAdmin, false}, {RoleOperator, RoleOperator, true}, {RoleOperator, RoleViewer, true},
		{RoleViewer, RoleAdmin, false}, {RoleViewer, RoleOperator, false}, {RoleViewer, RoleViewer, true},
		{"", RoleViewer, false}, {"root", RoleViewer, false},
	} {
		if got := tc.have.Allows(tc.need); got != tc.want {
			t.Errorf("%q allows %q = %v, want %v", tc.have, tc.need, got, tc.want)
		}
	}
}

func TestBootstrapAdmin(t *testing.T) {
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ts := newTokenStore(st, time.Now)
	file := filepath.Join(t.TempDir(), "sub", "admin.token")
	created, err := ts.bootstrapAdmin(t.Context(), file)
	if err != nil || !created {
		t.Fatalf("first bootstrap: %v %v", created, err)
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}
	b, _ := os.ReadFile(file)
	tok := strings.TrimSpace(string(b))
	if id, err := ts.verify(t.Context(), tok); err != nil || id.Role != RoleAdmin {
		t.Fatalf("the written token: %+v %v", id, err)
	}
	// A restart (or another controller on the store) makes no other one.
	if created, err := ts.bootstrapAdmin(t.Context(), file); err != nil || created {
		t.Fatalf("second bootstrap: %v %v", created, err)
	}
	if all, _ := ts.list(t.Context()); len(all) != 1 {
		t.Fatalf("%d tokens", len(all))
	}
	// With every admin token gone, the next start makes one again.
	id, _, _ := parseToken(tok)
	if err := st.Delete(t.Context(), tokenPrefix+id, store.Any); err != nil {
		t.Fatal(err)
	}
	if created, err := ts.bootstrapAdmin(t.Context(), file); err != nil || !created {
		t.Fatalf("bootstrap after the admin token was removed: %v %v", created, err)
	}
	// A file that cannot be written leaves no token behind.
	if err := st.Delete(t.Context(), tokenPrefix+firstTokenID(t, ts), store.Any); err != nil {
		t.Fatal(err)
	}
	blocker := filepath.Join(t.TempDir(), "file")
	os.WriteFile(blocker, nil, 0o600)
	if _, err := ts.bootstrapAdmin(t.Context(), filepath.Join(blocker, "admin.token")); err == nil {
		t.Fatal("bootstrap into an impossible path succeeded")
	}
	if all, _ := ts.list(t.Context()); len(all) != 0 {
		t.Errorf("tokens left after a failed bootstrap: %+v", all)
	}
}

func firstTokenID(t *testing.T, ts *tokenStore) string {
	all, err := ts.list(t.Context())
	if err != nil || len(all) == 0 {
		t.Fatalf("tokens: %v %v", all, err)
	}
	return all[0].ID
}

func TestParseToken(t *testing.T) {
	tok, rec := newToken(RoleViewer, "", 0, time.Now())
	id, secret, ok := parseToken(tok)
	if !ok || id != rec.ID || hashSecret(secret) != rec.SecretHash {
		t.Fatalf("parseToken(%q) = %q %q %v", tok, id, secret, ok)
	}
	for _, bad := range []string{"", "rik_", "rik__", tok + "x", strings.ToUpper(tok), "xyz" + tok[3:],
		"rik_" + id + "_" + secret[:5], "rik_" + id + "_" + strings.Repeat("1", tokenSecretLen)} {
		if _, _, ok := parseToken(bad); ok {
			t.Errorf("parseToken(%q) accepted", bad)
		}
	}
}
