package server

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Role is what a token may do. Each role may do what the ones below it may.
type Role int

// Roles.
const (
	RoleNone     Role = iota
	RoleReader        // read state, jobs, events, metrics
	RoleOperator      // act: resume, ack, abort; run drills and failovers
	RoleAdmin         // everything
)

func (r Role) String() string {
	switch r {
	case RoleReader:
		return "reader"
	case RoleOperator:
		return "operator"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

// ParseRole reads a role name.
func ParseRole(s string) (Role, error) {
	switch s {
	case "reader":
		return RoleReader, nil
	case "operator":
		return RoleOperator, nil
	case "admin":
		return RoleAdmin, nil
	}
	return RoleNone, fmt.Errorf("role %q: want reader, operator or admin", s)
}

// Token is an API token as the daemon keeps it: only the SHA-256 of the
// secret, never the secret.
type Token struct {
	Name string
	Role Role
	Hash [sha256.Size]byte
}

// HashToken returns the hex SHA-256 of a secret, the form a token file holds.
func HashToken(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// ParseToken reads one token as "ROLE SHA256HEX [NAME]" (the line of a
// token file) or "ROLE:SHA256HEX[:NAME]" (a flag).
func ParseToken(s string) (Token, error) {
	fields := strings.Fields(s)
	if len(fields) == 1 {
		fields = strings.SplitN(s, ":", 3)
	}
	if len(fields) < 2 || len(fields) > 3 {
		return Token{}, fmt.Errorf("token %q: want ROLE SHA256HEX [NAME]", redact(s))
	}
	role, err := ParseRole(fields[0])
	if err != nil {
		return Token{}, fmt.Errorf("token: %w", err)
	}
	raw, err := hex.DecodeString(fields[1])
	if err != nil || len(raw) != sha256.Size {
		return Token{}, fmt.Errorf("token of role %s: the second field must be the 64-hex-digit SHA-256 of the secret (standby stores no secret), e.g. from `printf %%s SECRET | sha256sum`", role)
	}
	t := Token{Role: role}
	copy(t.Hash[:], raw)
	if len(fields) == 3 {
		t.Name = fields[2]
	}
	return t, nil
}

// redact keeps a malformed token line from printing what might be a secret.
func redact(s string) string {
	if len(s) > 8 {
		return s[:4] + "…"
	}
	return "…"
}

// ParseTokens reads a token file: one token per line, "ROLE SHA256HEX
// [NAME]"; blank lines and lines starting with # are skipped.
func ParseTokens(r io.Reader) ([]Token, error) {
	var out []Token
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		t, err := ParseToken(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, t)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// authenticate returns the role of the request's bearer token.
func (s *Server) authenticate(r *http.Request) (Role, bool) {
	h := r.Header.Get("Authorization")
	scheme, secret, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || secret == "" {
		return RoleNone, false
	}
	return s.lookup(secret)
}

// lookup returns the role of a token's secret, as the header or the
// dashboard's login form gives it. Every known token is compared, in
// constant time, so that the answer's timing tells nothing about which hash
// came close.
func (s *Server) lookup(secret string) (Role, bool) {
	secret = strings.TrimSpace(secret)
	if secret == "" {
		return RoleNone, false
	}
	sum := sha256.Sum256([]byte(secret))
	role, found := RoleNone, false
	for _, t := range s.tokens {
		if subtle.ConstantTimeCompare(sum[:], t.Hash[:]) == 1 {
			role, found = t.Role, true
		}
	}
	return role, found
}

// require wraps h so that it runs only for a token with at least role.
func (s *Server) require(role Role, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		got, ok := s.authenticate(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="standby"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "missing or unknown bearer token", "send Authorization: Bearer TOKEN (the CLI reads STANDBY_TOKEN)")
			return
		}
		if got < role {
			writeError(w, http.StatusForbidden, "forbidden", fmt.Sprintf("this needs the %s role; the token has %s", role, got), "use a token with that role")
			return
		}
		h(w, r)
	}
}
