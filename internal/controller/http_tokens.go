package controller

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode"
)

// Token management routes (admin only, see routeRoles).

// maxTokenDescription bounds a token's description.
const maxTokenDescription = 256

type createTokenRequest struct {
	Role        string `json:"role"`
	Description string `json:"description"`
	// TTL is a duration such as "24h" or "90m"; empty or "0": no expiry.
	TTL string `json:"ttl"`
}

// check validates the request.
func (req createTokenRequest) check() (Role, time.Duration, error) {
	if req.Role == "" {
		return "", 0, badField("role", "required")
	}
	role, err := ParseRole(req.Role)
	if err != nil {
		return "", 0, badField("role", err.Error())
	}
	if len(req.Description) > maxTokenDescription {
		return "", 0, badField("description", fmt.Sprintf("at most %d bytes", maxTokenDescription))
	}
	if strings.IndexFunc(req.Description, unicode.IsControl) >= 0 {
		return "", 0, badField("description", "must not contain control characters")
	}
	var ttl time.Duration
	if req.TTL != "" {
		if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl < 0 {
			return "", 0, badField("ttl", `must be a duration such as "24h" or "30m" (0: never expires)`)
		}
	}
	return role, ttl, nil
}

// createdToken is the answer of tokens.create: the item and, this once,
// the bearer token itself.
type createdToken struct {
	TokenItem
	Token string `json:"token"`
}

func (s *Server) handleTokensCreate(w http.ResponseWriter, r *http.Request) {
	data, err := s.readBody(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var req createTokenRequest
	if err := decodeStrict(data, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	role, ttl, err := req.check()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	bearer, tok, err := s.tokens.create(r.Context(), role, req.Description, ttl)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("token created", "token", tok.ID, "role", role, "by", callerToken(r))
	writeJSON(w, http.StatusCreated, createdToken{TokenItem: tok.item(s.now()), Token: bearer})
}

func (s *Server) handleTokensList(w http.ResponseWriter, r *http.Request) {
	all, err := s.tokens.list(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	now := s.now()
	items := make([]TokenItem, 0, len(all))
	for _, t := range all {
		items = append(items, t.item(now))
	}
	writeJSON(w, http.StatusOK, items)
}

func (s *Server) handleTokensDelete(w http.ResponseWriter, r *http.Request) {
	ref, err := s.readID(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.tokens.delete(r.Context(), ref); err != nil {
		if errors.Is(err, errLastAdmin) {
			writeError(w, http.StatusConflict, err.Error())
			return
		}
		s.fail(w, r, err)
		return
	}
	s.log.Info("token deleted", "token", strings.TrimPrefix(tokenKeyOf(ref), tokenPrefix), "by", callerToken(r))
	w.WriteHeader(http.StatusNoContent)
}

// callerToken is the id of the token that made the request, for logs.
func callerToken(r *http.Request) string {
	id, _ := r.Context().Value(identityKey{}).(identity)
	if id.tokenID == "" {
		return "-"
	}
	return id.tokenID
}
