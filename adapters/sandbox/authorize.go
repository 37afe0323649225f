package sandbox

import (
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"regexp"
	"slices"

	"github.com/ory/fosite"
)

// Bounds on an authorisation request. Every parameter of an approved
// request is kept with its code until the code expires, so they bound the
// memory a client can make the sandbox hold (with Config.MaxCodes).
const (
	// MaxStateLength is the longest state parameter accepted, in bytes.
	MaxStateLength = 512
	// MaxAuthorizeParamsBytes bounds the sum of the lengths of every
	// parameter name and value of an authorisation request.
	MaxAuthorizeParamsBytes = 8 << 10
)

// challengePattern is an S256 code_challenge: BASE64URL(SHA256(verifier))
// without padding is always 43 characters (RFC 7636 section 4.2).
var challengePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)

// handleAuthorize serves GET (and, for the consent form, POST)
// /sandbox/oauth/authorize.
//
// Validation order: the redirect URI first (a request whose redirect_uri is
// not exactly registered is answered with a 400 JSON error and never
// redirected), then fosite's checks (client, response_type, scopes, state),
// then PKCE, and only then consent. Errors found after the redirect URI is
// known to be good are redirected to it as error=...&state=... (RFC 6749
// section 4.1.2.1).
func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := r.ParseForm(); err != nil {
		writeJSONError(w, http.StatusBadRequest, "invalid_request", "The request parameters could not be parsed.")
		return
	}
	// Bounds first, answered with 400 and never redirected: an oversized
	// request is refused before anything about it is stored or echoed.
	if states := r.Form["state"]; len(states) > 0 && len(states[0]) > MaxStateLength {
		writeJSONError(w, http.StatusBadRequest, "invalid_request",
			fmt.Sprintf("The state parameter is %d bytes; at most %d are accepted.", len(states[0]), MaxStateLength))
		return
	}
	if n := formBytes(r.Form); n > MaxAuthorizeParamsBytes {
		writeJSONError(w, http.StatusBadRequest, "invalid_request",
			fmt.Sprintf("The request parameters total %d bytes; at most %d are accepted.", n, MaxAuthorizeParamsBytes))
		return
	}
	if r.Form.Get("client_id") == s.clientID {
		uris := r.Form["redirect_uri"]
		if len(uris) != 1 || !slices.Contains(s.redirectURIs, uris[0]) {
			writeJSONError(w, http.StatusBadRequest, "invalid_request",
				"The redirect_uri parameter is required and must exactly match a registered redirect URI.")
			return
		}
	}

	ar, err := s.provider.NewAuthorizeRequest(ctx, r)
	if err != nil {
		s.provider.WriteAuthorizeError(ctx, w, ar, err)
		return
	}
	if err := checkPKCE(ar); err != nil {
		s.provider.WriteAuthorizeError(ctx, w, ar, err)
		return
	}

	decision := ""
	if r.Method == http.MethodPost {
		decision = r.PostForm.Get("decision")
	}
	if decision == "" {
		decision = s.consentMode()
	}
	switch decision {
	case ConsentApprove:
		s.approve(w, r, ar)
	case ConsentDeny:
		s.provider.WriteAuthorizeError(ctx, w, ar,
			fosite.ErrAccessDenied.WithHint("The resource owner denied the request."))
	case ConsentPrompt:
		s.renderConsent(w, r, ar)
	default:
		s.provider.WriteAuthorizeError(ctx, w, ar,
			fosite.ErrInvalidRequest.WithHint("The consent decision must be approve or deny."))
	}
}

// checkPKCE enforces PKCE with S256 before consent is asked, so that a
// request that cannot succeed is refused with invalid_request at once
// (RFC 7636 section 4.4.1) instead of after the user approved it. fosite's
// PKCE handler repeats the method check when the code is issued.
func checkPKCE(ar fosite.AuthorizeRequester) error {
	form := ar.GetRequestForm()
	challenge, method := form.Get("code_challenge"), form.Get("code_challenge_method")
	switch {
	case challenge == "":
		return fosite.ErrInvalidRequest.WithHint("PKCE is required: send code_challenge and code_challenge_method=S256.")
	case method != "S256":
		return fosite.ErrInvalidRequest.WithHint("code_challenge_method must be S256; plain is not supported.")
	case !challengePattern.MatchString(challenge):
		return fosite.ErrInvalidRequest.WithHint("code_challenge must be the 43-character base64url SHA-256 of the code_verifier.")
	}
	return nil
}

// grantedScopes returns the scopes to grant: the requested ones (fosite has
// checked they are registered), or all registered scopes when none were
// requested.
func (s *Server) grantedScopes(ar fosite.AuthorizeRequester) []string {
	if req := ar.GetRequestedScopes(); len(req) > 0 {
		return req
	}
	return s.scopes
}

func (s *Server) approve(w http.ResponseWriter, r *http.Request, ar fosite.AuthorizeRequester) {
	ctx := r.Context()
	for _, sc := range s.grantedScopes(ar) {
		ar.GrantScope(sc)
	}
	resp, err := s.provider.NewAuthorizeResponse(ctx, ar, newSession())
	if full := (*errStoreFull)(nil); errors.As(err, &full) {
		// RFC 6749 section 4.1.2.1: the client learns at its redirect
		// URI that the server cannot issue a code now.
		s.stats.refusedFull()
		s.log.Warn("authorize refused: the sandbox is full", "reason", full.what)
		s.provider.WriteAuthorizeError(ctx, w, ar, fosite.ErrTemporarilyUnavailable.WithHint(
			"The sandbox holds as many authorisation codes or grants as it may ("+full.what+"); try again later."))
		return
	}
	if err != nil {
		s.log.Info("authorize failed", "error", fosite.ErrorToRFC6749Error(err).ErrorField)
		s.provider.WriteAuthorizeError(ctx, w, ar, err)
		return
	}
	s.log.Info("authorization granted", "scopes", ar.GetGrantedScopes())
	s.provider.WriteAuthorizeResponse(ctx, w, ar, resp)
}

// formBytes sums the lengths of every name and value in form.
func formBytes(form url.Values) int {
	n := 0
	for k, vs := range form {
		for _, v := range vs {
			n += len(k) + len(v)
		}
		if len(vs) == 0 {
			n += len(k)
		}
	}
	return n
}

func newSession() *fosite.DefaultSession {
	return &fosite.DefaultSession{Subject: sessionSubject, Username: sessionSubject}
}

type consentParam struct{ Name, Value string }

type consentPage struct {
	ClientID string
	Scopes   []string
	Action   string
	Params   []consentParam
}

// renderConsent writes the consent page. The form posts the original
// request parameters back to the authorize endpoint, plus decision=approve
// or decision=deny from the button that was clicked.
func (s *Server) renderConsent(w http.ResponseWriter, r *http.Request, ar fosite.AuthorizeRequester) {
	form := ar.GetRequestForm()
	keys := make([]string, 0, len(form))
	for k := range form {
		if k != "decision" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	page := consentPage{ClientID: s.clientID, Scopes: s.grantedScopes(ar), Action: r.URL.Path}
	for _, k := range keys {
		for _, v := range form[k] {
			page.Params = append(page.Params, consentParam{k, v})
		}
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	// No form-action directive: Chrome applies it to the redirect that
	// follows the form POST, which goes to the client's origin.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	h.Set("Referrer-Policy", "no-referrer")
	if err := consentTemplate.Execute(w, page); err != nil {
		s.log.Error("rendering consent page", "error", err)
	}
}

var consentTemplate = template.Must(template.New("consent").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Authorise {{.ClientID}} – Pleo sandbox</title>
<style>
  :root { color-scheme: light; }
  body { margin: 0; min-height: 100vh; display: grid; place-items: center;
         background: #f4f4f6; color: #1c1c21;
         font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
  main { background: #fff; width: min(28rem, calc(100vw - 2rem)); padding: 2rem;
         border-radius: 12px; box-shadow: 0 1px 3px rgba(0,0,0,.08), 0 8px 24px rgba(0,0,0,.06); }
  .badge { display: inline-block; margin: 0 0 1rem; padding: .15rem .6rem; border-radius: 999px;
           background: #fff1e6; color: #a4470e; font-size: .8rem; font-weight: 600; letter-spacing: .02em; }
  h1 { font-size: 1.25rem; margin: 0 0 1rem; font-weight: 600; }
  .client { color: #5b3df5; }
  ul { list-style: none; margin: 0 0 1.5rem; padding: 0; border: 1px solid #e6e6ea; border-radius: 8px; }
  li { padding: .6rem .9rem; border-top: 1px solid #e6e6ea; }
  li:first-child { border-top: 0; }
  code { font: .95rem ui-monospace, SFMono-Regular, Menlo, monospace; }
  .actions { display: flex; gap: .75rem; justify-content: flex-end; }
  button { font: inherit; font-weight: 600; padding: .55rem 1.3rem; border-radius: 8px; cursor: pointer; }
  #deny { background: #fff; color: #1c1c21; border: 1px solid #c9c9d1; }
  #approve { background: #1c1c21; color: #fff; border: 1px solid #1c1c21; }
  button:focus-visible { outline: 3px solid #5b3df5; outline-offset: 2px; }
  .note { margin: 1.5rem 0 0; color: #6b6b76; font-size: .8rem; }
</style>
</head>
<body>
<main>
  <p class="badge">Pleo sandbox</p>
  <h1><span class="client">{{.ClientID}}</span> wants access to:</h1>
  <ul>{{range .Scopes}}
    <li><code>{{.}}</code></li>{{end}}
  </ul>
  <form method="post" action="{{.Action}}">{{range .Params}}
    <input type="hidden" name="{{.Name}}" value="{{.Value}}">{{end}}
    <div class="actions">
      <button type="submit" id="deny" name="decision" value="deny">Deny</button>
      <button type="submit" id="approve" name="decision" value="approve">Approve</button>
    </div>
  </form>
  <p class="note">This is a test authorisation server. No real Pleo account is involved.</p>
</main>
</body>
</html>
`))
