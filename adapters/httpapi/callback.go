package httpapi

import (
	"errors"
	"net/http"
	"strings"

	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
)

// callbackProblem is what the callback page says for one kind of bad state.
type callbackProblem struct {
	Code    string
	Title   string
	Message string
}

var (
	problemMissing = callbackProblem{"state_missing", "This link is incomplete",
		"The provider sent you back without the state parameter, so tokenline cannot tell which connection this is for. Nothing was changed."}
	problemUnknown = callbackProblem{"state_unknown", "This link is not valid or was already used",
		"Each authorisation link works once. This one is unknown or was already used, so nothing was changed. Start again from the connection page."}
	problemExpired = callbackProblem{"state_expired", "This link has expired",
		"You took too long to finish connecting, so this authorisation link expired. Nothing was changed. Start again from the connection page."}
	problemMismatch = callbackProblem{"state_mismatch", "This link belongs to an older attempt",
		"A newer connection attempt was started (or the attempt already ended), so this link no longer applies. Nothing was changed. Use the newest link or start again."}
	problemInternal = callbackProblem{"internal_error", "Something went wrong",
		"tokenline could not finish the connection because of an internal error. Try again from the connection page."}
)

// handleCallback is the OAuth redirect URI. It needs no API token: the
// one-time state protects it. Its query (state, code) is never logged or
// echoed. A bad state answers 400 and changes nothing; success and a refusal
// by the provider both redirect (303) to the connection's UI page.
func (s *Server) handleCallback(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	q := r.URL.Query()
	res, err := s.cfg.Connections.HandleCallback(r.Context(), q.Get("state"), q.Get("code"), q.Get("error"), q.Get("error_description"))
	switch {
	case err == nil:
		http.Redirect(w, r, s.cfg.BaseURL+"/ui/connections/"+res.ConnectionID, http.StatusSeeOther)
		return
	case errors.Is(err, lifecycle.ErrDenied) && domain.ValidConnectionID(res.ConnectionID):
		http.Redirect(w, r, s.cfg.BaseURL+"/ui/connections/"+res.ConnectionID+"?authorisation=denied", http.StatusSeeOther)
		return
	}
	status, p := http.StatusBadRequest, problemInternal
	switch {
	case errors.Is(err, lifecycle.ErrStateMissing):
		p = problemMissing
	case errors.Is(err, lifecycle.ErrStateUnknown):
		p = problemUnknown
	case errors.Is(err, lifecycle.ErrStateExpired):
		p = problemExpired
	case errors.Is(err, lifecycle.ErrStateMismatch), errors.Is(err, domain.ErrDeleted), errors.Is(err, domain.ErrNotFound):
		p = problemMismatch
	default:
		status = http.StatusInternalServerError
		s.log.Error("oauth callback failed", "error", err.Error())
	}
	s.log.Warn("oauth callback refused", "error_code", p.Code)
	if wantsJSON(r) {
		writeError(w, status, p.Code, p.Message)
		return
	}
	s.renderPage(w, status, "callback_error.html", pageData{Title: p.Title, Problem: p})
}

func wantsJSON(r *http.Request) bool {
	a := r.Header.Get("Accept")
	return strings.Contains(a, "application/json") && !strings.Contains(a, "text/html")
}
