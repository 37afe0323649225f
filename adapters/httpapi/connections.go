package httpapi

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
)

// status renders c as the API's only view of a connection
// (apitypes.StatusOf), with reauthorise_url made absolute when BaseURL is
// set.
func (s *Server) status(c domain.Connection) apitypes.ConnectionStatus {
	st := apitypes.StatusOf(&c)
	if st.ActionBy == domain.ActorOperator {
		if at, ok := s.secretSetAt.Load(c.Provider); ok && at.(time.Time).After(c.Since) {
			// The operator installed a new client secret since: the
			// user's reconnect is the fix now.
			st.ActionBy, st.OperatorText = domain.ActorUser, ""
		}
	}
	if st.ReauthoriseURL != "" {
		st.ReauthoriseURL = s.cfg.BaseURL + st.ReauthoriseURL
	}
	return st
}

// writeStatus answers c's status, or err as the service error it is.
func (s *Server) writeStatus(w http.ResponseWriter, r *http.Request, c domain.Connection, err error) {
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.status(c))
}

func (s *Server) handleCreate(w http.ResponseWriter, r *http.Request) {
	var req apitypes.CreateRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if req.Provider == "" {
		writeError(w, http.StatusBadRequest, "invalid_command", "provider is required")
		return
	}
	if !s.cfg.Connections.HasProvider(req.Provider) {
		writeError(w, http.StatusBadRequest, "unknown_provider", "no provider named "+quote(req.Provider)+" is configured")
		return
	}
	c, err := s.cfg.Connections.Create(r.Context(), req.Provider, req.Scopes, req.Config)
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	w.Header().Set("Location", s.cfg.BaseURL+apitypes.Path(apitypes.RouteConnection, c.ID))
	writeJSON(w, http.StatusCreated, s.status(c))
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	cs, err := s.cfg.Status.Connections(r.Context())
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	out := apitypes.ListResponse{Connections: make([]apitypes.ConnectionStatus, 0, len(cs))}
	for _, c := range cs {
		if !c.Deleted {
			out.Connections = append(out.Connections, s.status(c))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) {
	id, ok := connectionID(w, r)
	if !ok {
		return
	}
	c, err := s.cfg.Status.Connection(r.Context(), id)
	s.writeStatus(w, r, c, err)
}

func (s *Server) handlePatch(w http.ResponseWriter, r *http.Request) {
	id, req, ok := connectionRequest[apitypes.UpdateRequest](w, r)
	if !ok {
		return
	}
	if req.Scopes == nil && req.Config == nil {
		writeError(w, http.StatusBadRequest, "invalid_command", "nothing to update: give config and/or scopes")
		return
	}
	c, err := s.cfg.Connections.Update(r.Context(), id, req.Scopes, req.Config)
	s.writeStatus(w, r, c, err)
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) {
	id, ok := connectionID(w, r)
	if !ok {
		return
	}
	if err := s.cfg.Connections.Delete(r.Context(), id); err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	id, ok := connectionID(w, r)
	if !ok {
		return
	}
	u, err := s.cfg.Connections.StartAuthorisation(r.Context(), id)
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	// The URL carries a one-time state: never cache it.
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, apitypes.AuthorizeResponse{AuthorizeURL: u})
}

// Bounds of GET /v1/connections/{id}/token?wait=.
const (
	// DefaultTokenWait is how long a token request waits for a refresh that
	// is due or in flight when it gives no wait.
	DefaultTokenWait = 2 * time.Second
	// MaxTokenWait is the longest wait a token request may ask for.
	MaxTokenWait = 10 * time.Second
)

// tokenWait reads ?wait=: a Go duration ("1.5s", "500ms") or whole
// seconds ("2"), 0 to MaxTokenWait; absent: DefaultTokenWait.
func tokenWait(r *http.Request) (time.Duration, bool) {
	q := r.URL.Query()
	if !q.Has("wait") {
		return DefaultTokenWait, true
	}
	v := q.Get("wait")
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 || n > int(MaxTokenWait/time.Second) {
			return 0, false
		}
		return time.Duration(n) * time.Second, true
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > MaxTokenWait {
		return 0, false
	}
	return d, true
}

// handleToken asks the gate first: it is the authority on whether the
// connection may be used now. While a refresh is due or in flight it waits
// for it (?wait=, default DefaultTokenWait), then answers 503
// refresh_in_progress with Retry-After; 409 only when a person must act
// (reauthorisation_required: the user; operator_action_required: the
// operator). The status is read only to explain a refusal (and to tell an
// unknown or deleted connection from a closed gate), so a status projection
// that lags a moment behind never refuses a usable token.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	if refuseSession(w, r) {
		return
	}
	id, ok := connectionID(w, r)
	if !ok {
		return
	}
	wait, ok := tokenWait(r)
	if !ok {
		writeError(w, http.StatusBadRequest, "invalid_query", "wait must be a duration from 0s to "+MaxTokenWait.String()+" (e.g. 2s, 500ms) or whole seconds")
		return
	}
	tok, exp, err := s.cfg.Connections.TokenWait(r.Context(), id, wait)
	if err == nil {
		if exp.IsZero() {
			if c, serr := s.cfg.Status.Connection(r.Context(), id); serr == nil && c.TokensHeld {
				exp = c.Tokens.AccessTokenExpiresAt
			}
		}
		writeJSON(w, http.StatusOK, apitypes.TokenResponse{AccessToken: tok, TokenType: "Bearer", ExpiresAt: exp.UTC(), AccessTokenFP: domain.Fingerprint(tok)})
		return
	}
	var ge *domain.GateError
	if !errors.As(err, &ge) {
		s.writeServiceError(w, r, err)
		return
	}
	c, serr := s.cfg.Status.Connection(r.Context(), id)
	switch {
	case serr != nil && (ge.Detail == domain.DetailUnknownConnection || errors.Is(serr, domain.ErrNotFound)):
		s.writeServiceError(w, r, domain.ErrNotFound)
		return
	case serr == nil && c.Deleted:
		s.writeServiceError(w, r, domain.ErrDeleted)
		return
	}
	s.metrics.ObserveGateDenial(ge.Detail)
	body := apitypes.GateErrorBody{State: ge.State, Reason: ge.Reason, Detail: ge.Detail}
	if serr == nil && (body.State == "" || ge.Detail == domain.DetailUnknownConnection) {
		body.State, body.Reason = c.State, c.Reason
	}
	retry := ge.RetryLater()
	if ge.Detail == domain.DetailUnknownConnection { // the gate has not seen it yet: the status says
		retry = body.State == domain.StateActive || body.State == domain.StateRefreshing
	}
	if retry {
		secs := 1
		if serr == nil && !c.RetryAt.IsZero() { // a transient failure: the refresh is retried then
			secs = max(secs, min(int(math.Ceil(time.Until(c.RetryAt).Seconds())), 300))
		}
		body.Error, body.RetryAfter = apitypes.GateErrorRefreshInProgress, secs
		body.Message = "a refresh of this connection's access token is due or in flight; retry after " + strconv.Itoa(secs) + " s (nobody needs to act)"
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		writeJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	body.ActionBy = domain.ActionBy(body.Reason)
	if body.ActionBy == domain.ActorNone || body.State == domain.StateReauthorising {
		body.ActionBy = domain.ActorUser
	}
	if body.ActionBy == domain.ActorOperator && serr == nil {
		body.ActionBy = s.status(c).ActionBy // the operator may have installed a new secret since
	}
	if ri, ok := body.Reason.Info(); ok {
		body.ReasonText = ri.UserText
	}
	if body.ActionBy == domain.ActorOperator {
		body.Error = apitypes.GateErrorOperatorAction
		text := domain.OperatorText(body.Reason)
		if serr == nil {
			text = strings.ReplaceAll(text, "{name}", c.Provider)
		}
		body.Message = "the operator must act: " + text
	} else {
		body.Error = apitypes.GateErrorReauthorisation
		body.Message = "the user must reconnect this connection"
		if body.ReasonText != "" {
			body.Message += ": " + body.ReasonText
		}
		body.ReauthoriseURL = s.cfg.BaseURL + apitypes.ReauthorisePath(id)
	}
	writeJSON(w, http.StatusConflict, body)
}

func (s *Server) handleRejection(w http.ResponseWriter, r *http.Request) {
	id, req, ok := connectionRequest[apitypes.RejectionRequest](w, r)
	if !ok {
		return
	}
	if req.Status < 100 || req.Status > 599 {
		writeError(w, http.StatusBadRequest, "invalid_command", "status must be an HTTP status: 401, 403, or one the provider's detection rules name")
		return
	}
	if len(req.WWWAuthenticate) > 2048 || len(req.AccessTokenFP) > 128 {
		writeError(w, http.StatusBadRequest, "invalid_command", "www_authenticate or access_token_fp is too long")
		return
	}
	body, msg := rejectionBody(req) // rejection_body.go
	if msg != "" {
		writeError(w, http.StatusBadRequest, "invalid_command", msg)
		return
	}
	c, err := s.cfg.Connections.ReportRejection(r.Context(), id, lifecycle.Rejection{
		Status: req.Status, WWWAuthenticate: req.WWWAuthenticate, Body: body, AccessTokenFP: req.AccessTokenFP,
	})
	s.writeStatus(w, r, c, err)
}

// quote quotes a user-supplied word for a message, bounded in length.
func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	b := []byte{'"'}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == '"' || r == '\\' {
			b = append(b, '?')
			continue
		}
		b = append(b, string(r)...)
	}
	return string(append(b, '"'))
}

// handleClientSecret installs a rotated client secret. The secret is never
// echoed or logged.
func (s *Server) handleClientSecret(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !s.cfg.Connections.HasProvider(name) {
		writeError(w, http.StatusNotFound, "not_found", "no such provider")
		return
	}
	var req apitypes.ClientSecretRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if err := s.cfg.Connections.SetClientSecret(name, req.ClientSecret); err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	s.secretSetAt.Store(name, time.Now())
	w.WriteHeader(http.StatusNoContent)
}
