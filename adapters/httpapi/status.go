package httpapi

import (
	"maps"
	"slices"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// ConnectionStatus is the API's view of a connection. It never holds a
// token: only the access token's expiry and fingerprints-free facts.
type ConnectionStatus struct {
	ID       string        `json:"id"`
	Provider string        `json:"provider"`
	State    domain.State  `json:"state"`
	Reason   domain.Reason `json:"reason"`
	// ReasonText is the reason in plain words for the person who must
	// reconnect (domain.Reason.Info().UserText); empty when there is none.
	ReasonText string    `json:"reason_text"`
	Since      time.Time `json:"since"`
	CreatedAt  time.Time `json:"created_at"`
	// Scopes are the connection's configured scopes, requested by the next
	// authorisation; GrantedScopes those of the current grant.
	Scopes        []string          `json:"scopes"`
	GrantedScopes []string          `json:"granted_scopes,omitempty"`
	Config        map[string]string `json:"config"`
	// HasTokens is true while the vault holds tokens for the connection.
	HasTokens            bool      `json:"has_tokens"`
	AccessTokenExpiresAt time.Time `json:"access_token_expires_at,omitzero"`
	// LastRefresh is the outcome of the latest refresh attempt, if any.
	LastRefresh *RefreshInfo `json:"last_refresh,omitempty"`
	// TransientFailures counts consecutive transient refresh failures;
	// RetryAt is the earliest next attempt after one.
	TransientFailures int       `json:"transient_failures"`
	RetryAt           time.Time `json:"retry_at,omitzero"`
	// AuthorisationExpiresAt is when the open attempt expires
	// (state reauthorising).
	AuthorisationExpiresAt time.Time `json:"authorisation_expires_at,omitzero"`
	// NeedsReauthorisation is true when only the user can restore access;
	// ReauthoriseURL is then the API route that starts it (POST).
	NeedsReauthorisation bool   `json:"needs_reauthorisation"`
	ReauthoriseURL       string `json:"reauthorise_url,omitempty"`
	Deleted              bool   `json:"deleted"`
	// Version is the stream sequence of the connection's last event.
	Version uint64 `json:"version"`
}

// RefreshInfo describes the latest refresh attempt.
type RefreshInfo struct {
	At        time.Time `json:"at"`
	OK        bool      `json:"ok"`
	ErrorCode string    `json:"error_code,omitempty"`
}

// StatusOf renders c; base is the public base URL ("" for relative links).
func StatusOf(c domain.Connection, base string) ConnectionStatus {
	st := ConnectionStatus{
		ID:                     c.ID,
		Provider:               c.Provider,
		State:                  c.State,
		Reason:                 c.Reason,
		Since:                  c.Since.UTC(),
		CreatedAt:              c.Created.UTC(),
		Scopes:                 slices.Clone(c.Scopes),
		Config:                 maps.Clone(c.Config),
		HasTokens:              c.TokensHeld,
		TransientFailures:      c.TransientFailures,
		RetryAt:                c.RetryAt.UTC(),
		AuthorisationExpiresAt: c.AttemptExpiresAt.UTC(),
		NeedsReauthorisation:   c.NeedsReauthorisation(),
		Deleted:                c.Deleted,
		Version:                c.Version,
	}
	if ri, ok := c.Reason.Info(); ok {
		st.ReasonText = ri.UserText
	}
	if st.Scopes == nil {
		st.Scopes = []string{}
	}
	if st.Config == nil {
		st.Config = map[string]string{}
	}
	if c.TokensHeld {
		st.AccessTokenExpiresAt = c.Tokens.AccessTokenExpiresAt.UTC()
		st.GrantedScopes = slices.Clone(c.Tokens.Scopes)
	}
	if !c.LastRefreshAt.IsZero() {
		st.LastRefresh = &RefreshInfo{At: c.LastRefreshAt.UTC(), OK: c.LastRefreshOK, ErrorCode: c.LastErrorCode}
	}
	if st.NeedsReauthorisation {
		st.ReauthoriseURL = base + "/v1/connections/" + c.ID + "/authorize"
	}
	return st
}
