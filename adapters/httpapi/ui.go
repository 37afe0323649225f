package httpapi

import (
	"bytes"
	"embed"
	"encoding/json"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/domain"
)

// The web UI is plain HTML, CSS and JavaScript embedded in the binary (no
// build step, nothing loaded from elsewhere).
//
// # How the UI authenticates
//
// The pages never carry the API token (nor any other secret), so they may
// be served to anyone. What they show comes from the /v1 API, which admits a
// browser by a session cookie (requireToken):
//
//   - An operator gets a one-time login link: `tokenline serve` prints one
//     when it starts (on a terminal), `tokenline ui` asks for a fresh one
//     with the API token (POST /v1/ui/login-links). The link's code works
//     once, for LoginCodeTTL.
//   - GET /ui/login?code= trades the code for a session and sets the cookie
//     tokenline_session (__Host-tokenline_session on https): HttpOnly,
//     SameSite=Strict, Path=/, Secure when Config.BaseURL is https, Max-Age
//     SessionTTL. At most MaxSessions live at once (the oldest goes).
//     POST /ui/logout ends the session.
//   - The API accepts the cookie only from a same-origin fetch (Sec-Fetch-
//     Site: same-origin) that carries no Authorization header; it never
//     hands a session an access token or a login link.
//
// A browser without a session (a second user on the same machine, a
// DNS-rebinding page on another host name: the cookie is bound to this
// host) gets the login page, which says how to get a link. One exception:
// the OAuth callback redirects the browser back to /ui/connections/{id}
// after a cross-site round trip through the provider, a navigation that
// SameSite=Strict sends without the cookie; such a request (Sec-Fetch-Site:
// cross-site) gets the page anyway, and its same-origin API calls carry the
// cookie (or, without a session, send the browser to the login page).
//
// The pages are sent with Cache-Control: no-store, Referrer-Policy:
// no-referrer (the login link's code never leaves in a Referer), and a
// Content-Security-Policy that allows only this origin's script and forbids
// framing (no clickjacking). State-changing requests from other origins are
// refused by the server-wide cross-origin protection
// (http.CrossOriginProtection); the sandbox's admin endpoints, which need no
// credentials, are besides served only to loopback peers with a local Host.

//go:embed ui
var uiFS embed.FS

var pages = template.Must(template.New("").ParseFS(uiFS, "ui/*.html"))

// pageData is what the page templates see.
type pageData struct {
	Title        string
	Page         string // "connections", "connection", "login", "error"
	Sandbox      bool
	ConnectionID string
	Providers    []string
	Problem      callbackProblem
}

// ReasonsJSON maps every reason to its plain-words text, for the UI's
// audit timeline.
func (pageData) ReasonsJSON() string {
	m := make(map[string]string, len(domain.Reasons))
	for _, ri := range domain.Reasons {
		m[string(ri.Reason)] = ri.UserText
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// TransitionsJSON maps every state-changing transition name (see
// domain.TransitionName) to the state it leads to, derived from
// domain.Transitions, so the UI's timeline never keeps its own copy.
func (pageData) TransitionsJSON() string {
	m := map[string]string{string(domain.EventConnectionCreated): string(domain.StateUnauthenticated)}
	for _, d := range domain.Transitions {
		for _, src := range d.Src {
			if src != d.Dst {
				m[d.Name] = d.Dst
			}
		}
	}
	b, _ := json.Marshal(m)
	return string(b)
}

const uiCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

func (s *Server) uiRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
	})
	route(mux, "/ui/{$}", map[string]http.HandlerFunc{"GET": s.handleUIIndex})
	route(mux, "/ui/login", map[string]http.HandlerFunc{"GET": s.handleLogin})
	route(mux, "/ui/logout", map[string]http.HandlerFunc{"POST": s.handleLogout})
	route(mux, "/ui/connections/{id}", map[string]http.HandlerFunc{"GET": s.handleUIConnection})
	route(mux, "/ui/webhooks", map[string]http.HandlerFunc{"GET": s.handleUIWebhooks}) // webhooks.go
	static, _ := fs.Sub(uiFS, "ui/static")
	files := http.StripPrefix("/ui/static/", http.FileServerFS(static))
	mux.Handle("GET /ui/static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	}))
	mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such page")
	})
}

func (s *Server) providers() []string {
	if len(s.cfg.Providers) > 0 {
		return s.cfg.Providers
	}
	if s.cfg.Sandbox != nil {
		return []string{"sandbox"}
	}
	return nil
}

func (s *Server) handleUIIndex(w http.ResponseWriter, r *http.Request) {
	if !s.uiSession(w, r) {
		return
	}
	s.renderPage(w, http.StatusOK, "index.html", pageData{
		Title: "Connections", Page: "connections", Sandbox: s.cfg.Sandbox != nil, Providers: s.providers(),
	})
}

func (s *Server) handleUIConnection(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !domain.ValidConnectionID(id) {
		s.renderPage(w, http.StatusNotFound, "callback_error.html", pageData{Title: "No such connection", Page: "error",
			Problem: callbackProblem{Code: "invalid_id", Title: "No such connection", Message: "The address does not name a connection."}})
		return
	}
	// Back from the provider (the OAuth callback's redirect): a cross-site
	// navigation, sent without the SameSite=Strict cookie. The page carries
	// nothing secret; its API calls carry the cookie.
	if r.Header.Get("Sec-Fetch-Site") != "cross-site" && !s.uiSession(w, r) {
		return
	}
	s.renderPage(w, http.StatusOK, "connection.html", pageData{
		Title: "Connection", Page: "connection", Sandbox: s.cfg.Sandbox != nil, ConnectionID: id,
	})
}

// uiSession reports whether r carries a live session cookie; without one
// it answers the login page.
func (s *Server) uiSession(w http.ResponseWriter, r *http.Request) bool {
	if s.validSession(r) {
		return true
	}
	p := problemSignIn
	if strings.HasPrefix(r.URL.Path, "/ui/connections/") {
		// Where the OAuth callback sends a browser without a session.
		p.Message = "If you just connected an account, tokenline has recorded the result and you can close this window. " + p.Message
		if r.URL.Query().Get("authorisation") == "denied" {
			p.Message = "The provider did not grant access, so the connection is not connected. " + problemSignIn.Message
		}
	}
	s.renderPage(w, http.StatusOK, "login.html", pageData{Title: "Sign in", Page: "login", Problem: p})
	return false
}

var (
	problemSignIn = callbackProblem{Code: "login_required", Title: "Sign in to tokenline",
		Message: "Open the one-time login link that tokenline serve printed when it started, or run tokenline ui on the machine tokenline runs on " +
			"(it reads the API token from the data directory) and open the link it prints. A link works once, for 5 minutes."}
	problemBadLink = callbackProblem{Code: "login_link_invalid", Title: "This login link does not work",
		Message: "Login links work once, for 5 minutes, and not after tokenline restarts. Run tokenline ui on the machine tokenline runs on for a fresh one."}
)

// handleLogin trades a login link's code for a session (cookie) and sends
// the browser to the UI (?next=, a page of the UI, or /ui/); without a
// code it shows the login page (also to a
// browser with a session: the UI's script comes here on a 401, and a
// redirect back would loop). The code
// is in the query string, which the access log never records.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	code := r.URL.Query().Get("code")
	if code == "" || r.Method == http.MethodHead {
		// HEAD (a link checker, a preview) never uses up a code.
		s.renderPage(w, http.StatusOK, "login.html", pageData{Title: "Sign in", Page: "login", Problem: problemSignIn})
		return
	}
	if !s.loginCodes.find(code, true) {
		s.log.Warn("ui login refused", "error_code", problemBadLink.Code)
		s.renderPage(w, http.StatusUnauthorized, "login.html", pageData{Title: "Sign in", Page: "login", Problem: problemBadLink})
		return
	}
	sid, _ := s.sessions.issue()
	http.SetCookie(w, s.sessionCookie(sid, int(SessionTTL/time.Second)))
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	s.log.Info("ui login", "sessions", s.sessions.len())
	http.Redirect(w, r, uiNext(r.URL.Query().Get("next")), http.StatusSeeOther)
}

// uiNext is where a login sends the browser: ?next= if it is a page of the
// UI (a path under /ui/, never another host), else /ui/.
func uiNext(next string) string {
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || !strings.HasPrefix(next, "/ui/") ||
		strings.ContainsAny(next, "\\\r\n") || strings.Contains(next, "//") || strings.Contains(next, "/..") {
		return "/ui/"
	}
	return next
}

// handleLogout ends the browser's session and clears its cookie.
func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(s.cookieName()); err == nil {
		s.sessions.find(c.Value, true)
	}
	http.SetCookie(w, s.sessionCookie("", -1))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

// handleLoginLink issues a one-time login link (POST /v1/ui/login-links,
// API token only).
func (s *Server) handleLoginLink(w http.ResponseWriter, r *http.Request) {
	if refuseSession(w, r) {
		return
	}
	link, exp := s.NewLoginLink()
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, apitypes.LoginLinkResponse{URL: link, ExpiresAt: exp.UTC()})
}

// NewLoginLink returns a one-time login link for the web UI
// (<BaseURL>/ui/login?code=...) and when it expires. The link is a secret:
// show it to the operator, never log it.
func (s *Server) NewLoginLink() (string, time.Time) {
	code, exp := s.loginCodes.issue()
	return s.cfg.BaseURL + "/ui/login?code=" + code, exp
}

// secureCookie: the session cookie is Secure when the UI is served over
// https.
func (s *Server) secureCookie() bool { return strings.HasPrefix(s.cfg.BaseURL, "https://") }

// cookieName is the session cookie's name; on https it has the __Host-
// prefix (the browser then insists on Secure, Path=/ and no Domain).
func (s *Server) cookieName() string {
	if s.secureCookie() {
		return "__Host-tokenline_session"
	}
	return "tokenline_session"
}

func (s *Server) sessionCookie(value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: s.cookieName(), Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: s.secureCookie(), SameSite: http.SameSiteStrictMode}
}

// validSession reports whether r carries the cookie of a live session.
func (s *Server) validSession(r *http.Request) bool {
	c, err := r.Cookie(s.cookieName())
	return err == nil && s.sessions.find(c.Value, false)
}

// proxyHeaders reveal a request relayed by a proxy: such a request is not
// from a browser on this machine, whatever its TCP peer.
var proxyHeaders = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip", "Via"}

func (s *Server) loopbackBrowser(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return false
	}
	if slices.ContainsFunc(proxyHeaders, func(h string) bool { return r.Header.Get(h) != "" }) {
		return false
	}
	name := r.Host
	if h, _, err := net.SplitHostPort(name); err == nil {
		name = h
	}
	name = strings.TrimSuffix(strings.ToLower(strings.Trim(name, "[]")), ".")
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return true
	}
	if ip := net.ParseIP(name); ip != nil && ip.IsLoopback() {
		return true
	}
	if s.cfg.BaseURL != "" {
		if u, err := url.Parse(s.cfg.BaseURL); err == nil && strings.EqualFold(u.Hostname(), name) {
			return true
		}
	}
	return false
}

func (s *Server) renderPage(w http.ResponseWriter, status int, name string, data pageData) {
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, data); err != nil {
		s.log.Error("render page failed", "page", name, "error", err.Error())
		writeError(w, http.StatusInternalServerError, "internal_error", "internal error")
		return
	}
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", uiCSP)
	startBody(w, status, "text/html; charset=utf-8")
	_, _ = w.Write(buf.Bytes())
}
