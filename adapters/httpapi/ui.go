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

	"github.com/tokenline/tokenline/domain"
)

// The web UI is plain HTML, CSS and JavaScript embedded in the binary (no
// build step, nothing loaded from elsewhere).
//
// # How the UI authenticates
//
// The UI's pages call the /v1 API with the same bearer token as any client.
// A browser cannot read the token file, so the server puts the token into
// the page it serves (<meta name="tokenline-api-token">), and serves those
// pages only when all of these hold:
//
//   - the TCP peer is a loopback address (127.0.0.0/8, ::1): only a person
//     on this machine sees the token, who could read the token file anyway;
//   - the request carries no Forwarded or X-Forwarded-For header: behind a
//     reverse proxy every peer looks local, so proxied requests are refused;
//   - the Host header names localhost, a loopback IP or the host of
//     Config.BaseURL: a DNS-rebinding page (evil.example resolving to
//     127.0.0.1) cannot load the page and read the token from it.
//
// Everyone else gets 403. The pages are sent with Cache-Control: no-store,
// Referrer-Policy: no-referrer, and a Content-Security-Policy that allows
// only this origin's script and forbids framing (no clickjacking).
//
// This is CSRF-safe by construction: the API accepts only the
// Authorization header, which a browser never attaches by itself, and no
// cookie is involved. Cross-origin POSTs (for example a forged form against
// the sandbox's admin endpoints) are refused besides by the server-wide
// cross-origin protection (http.CrossOriginProtection).

//go:embed ui
var uiFS embed.FS

var pages = template.Must(template.New("").ParseFS(uiFS, "ui/*.html"))

// pageData is what the page templates see.
type pageData struct {
	Title        string
	Page         string // "connections", "connection", "error"
	Token        string // only on loopback pages
	Sandbox      bool
	ConnectionID string
	Providers    []string
	Problem      callbackProblem
}

// DefaultProvider is the provider preselected in the create form.
func (d pageData) DefaultProvider() string {
	if len(d.Providers) > 0 {
		return d.Providers[0]
	}
	return ""
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
	route(mux, "/ui/connections/{id}", map[string]http.HandlerFunc{"GET": s.handleUIConnection})
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
	if !s.uiAllowed(w, r) {
		return
	}
	s.renderPage(w, http.StatusOK, "index.html", pageData{
		Title: "Connections", Page: "connections", Token: s.pageToken(), Sandbox: s.cfg.Sandbox != nil, Providers: s.providers(),
	})
}

func (s *Server) handleUIConnection(w http.ResponseWriter, r *http.Request) {
	if !s.uiAllowed(w, r) {
		return
	}
	id := r.PathValue("id")
	if !domain.ValidConnectionID(id) {
		s.renderPage(w, http.StatusNotFound, "callback_error.html", pageData{Title: "No such connection", Page: "error",
			Problem: callbackProblem{Code: "invalid_id", Title: "No such connection", Message: "The address does not name a connection."}})
		return
	}
	s.renderPage(w, http.StatusOK, "connection.html", pageData{
		Title: "Connection", Page: "connection", Token: s.pageToken(), Sandbox: s.cfg.Sandbox != nil, ConnectionID: id,
	})
}

// uiAllowed applies the rules in the package comment and answers 403 when
// they do not hold.
func (s *Server) uiAllowed(w http.ResponseWriter, r *http.Request) bool {
	if s.loopbackBrowser(r) {
		return true
	}
	p := callbackProblem{Code: "forbidden", Title: "The web UI is only served on this machine",
		Message: "Open it from the machine tokenline runs on, at http://127.0.0.1 or http://localhost. Other clients use the API with the API token."}
	if strings.HasPrefix(r.URL.Path, "/ui/connections/") {
		// Where the OAuth callback sends a browser on another machine.
		p.Message = "If you just connected an account, tokenline has recorded the result and you can close this window. " +
			"The web UI itself is only served on the machine tokenline runs on; other clients use the API."
		if r.URL.Query().Get("authorisation") == "denied" {
			p.Message = "The provider did not grant access, so the connection is not connected. " +
				"The web UI itself is only served on the machine tokenline runs on; other clients use the API."
		}
	}
	s.renderPage(w, http.StatusForbidden, "callback_error.html", pageData{Title: "Not available", Page: "error", Problem: p})
	return false
}

// pageToken is the API token the UI pages carry ("" with UIWithoutToken).
func (s *Server) pageToken() string {
	if s.cfg.UIWithoutToken {
		return ""
	}
	return s.cfg.APIToken
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
