package server

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// A browser cannot send a bearer header, so the dashboard signs it in once:
// the login form takes a token, checks it like the API does, and hands the
// browser a session cookie. The cookie holds a random session key, never the
// token; the server keeps only the key's hash with the token's role, in
// memory, so a restart of the daemon signs everyone out.

const (
	sessionCookie = "standby_session"
	sessionTTL    = 12 * time.Hour
	maxSessions   = 1024 // the oldest is dropped beyond it
	maxLoginBody  = 4 << 10
)

type session struct {
	role    Role
	expires time.Time
}

type sessions struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]session
}

// open starts a session for role and returns its key.
func (ss *sessions) open(role Role, now time.Time) (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	key := base64.RawURLEncoding.EncodeToString(b[:])
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.m == nil {
		ss.m = map[[sha256.Size]byte]session{}
	}
	for k, s := range ss.m {
		if !now.Before(s.expires) {
			delete(ss.m, k)
		}
	}
	for len(ss.m) >= maxSessions {
		var oldest [sha256.Size]byte
		first := true
		for k, s := range ss.m {
			if first || s.expires.Before(ss.m[oldest].expires) {
				oldest, first = k, false
			}
		}
		delete(ss.m, oldest)
	}
	ss.m[sha256.Sum256([]byte(key))] = session{role: role, expires: now.Add(sessionTTL)}
	return key, nil
}

// role returns the role of a live session.
func (ss *sessions) role(key string, now time.Time) (Role, bool) {
	if key == "" {
		return RoleNone, false
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	h := sha256.Sum256([]byte(key))
	s, ok := ss.m[h]
	if !ok {
		return RoleNone, false
	}
	if !now.Before(s.expires) {
		delete(ss.m, h)
		return RoleNone, false
	}
	return s.role, true
}

func (ss *sessions) close(key string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.m, sha256.Sum256([]byte(key)))
}

// viewer is who looks at a dashboard page.
type viewer struct {
	Role Role
	// Session: signed in through the login form (and so may sign out),
	// rather than by a bearer header.
	Session bool
}

// uiViewer returns who sends r: a bearer token first, else the session
// cookie.
func (s *Server) uiViewer(r *http.Request) (viewer, bool) {
	if role, ok := s.authenticate(r); ok {
		return viewer{Role: role}, true
	}
	if c, err := r.Cookie(sessionCookie); err == nil {
		if role, ok := s.sessions.role(c.Value, s.clock.Now()); ok {
			return viewer{Role: role, Session: true}, true
		}
	}
	return viewer{}, false
}

// requireUI wraps a dashboard page: it runs for a reader or above, and
// sends anyone else to the login form, which brings them back here.
func (s *Server) requireUI(h func(http.ResponseWriter, *http.Request, viewer)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		securePage(w)
		v, ok := s.uiViewer(r)
		if !ok {
			http.Redirect(w, r, "/ui/login?next="+url.QueryEscape(r.URL.Path), http.StatusSeeOther)
			return
		}
		if v.Role < RoleReader {
			s.renderError(w, r, http.StatusForbidden, "This needs the reader role.", "Sign in with a token that has it.")
			return
		}
		h(w, r, v)
	}
}

// loginPage is the data of the login form.
type loginPage struct {
	Next    string
	Problem string
}

func (s *Server) loginForm(w http.ResponseWriter, r *http.Request) {
	securePage(w)
	s.render(w, http.StatusOK, "login", page{Title: "Sign in", Data: loginPage{Next: safeNext(r.URL.Query().Get("next"))}})
}

// login checks the token of the form (read from the body only, so that it
// never shows in a URL or an access log) and opens a session.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	securePage(w)
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
	if err := r.ParseForm(); err != nil {
		s.render(w, http.StatusBadRequest, "login", page{Title: "Sign in", Data: loginPage{Problem: "The form could not be read; send it again."}})
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	role, ok := s.lookup(r.PostForm.Get("token"))
	if !ok || role < RoleReader {
		s.render(w, http.StatusUnauthorized, "login", page{Title: "Sign in", Data: loginPage{Next: next,
			Problem: "This token is not one the daemon knows. Check that it is the whole secret, not its hash."}})
		return
	}
	key, err := s.sessions.open(role, s.clock.Now())
	if err != nil {
		s.renderError(w, r, http.StatusInternalServerError, "Could not start a session: "+err.Error(), "Try again.")
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: key, Path: "/ui/",
		MaxAge: int(sessionTTL / time.Second), HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: r.TLS != nil,
	})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// logout ends the browser's session. Strict same-site cookies keep another
// site from signing a user out.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	securePage(w)
	if c, err := r.Cookie(sessionCookie); err == nil {
		s.sessions.close(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/ui/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

// safeNext keeps the page to return to after login on the dashboard, so
// that the login form cannot send a browser elsewhere.
func safeNext(p string) string {
	if !strings.HasPrefix(p, "/ui/") || strings.ContainsAny(p, "\\\r\n") || strings.HasPrefix(p, "/ui/login") {
		return "/ui/"
	}
	return p
}

// securePage sets the headers every dashboard answer carries: no script,
// style or frame from elsewhere, no caching of what a page shows.
func securePage(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}
