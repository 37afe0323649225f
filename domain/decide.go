package domain

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Refresh triggers recorded in refresh.started.
const (
	TriggerSchedule       = "schedule"
	TriggerAccessRejected = "access_rejected"
	TriggerManual         = "manual"
)

// Command is a request to change a connection. Decide turns it into exactly
// one event payload, or refuses it. (One event per command keeps every append
// atomic without batch publishing.)
type Command interface{ command() }

// Create makes a new connection.
type Create struct {
	Provider string
	Scopes   []string
	Config   map[string]string
}

// StartAuthorisation opens an authorisation attempt (also reauthorisation).
type StartAuthorisation struct {
	AttemptID string
	ExpiresAt time.Time
}

// CompleteAuthorisation records a successful code exchange for the open
// attempt; the tokens are already in the vault.
type CompleteAuthorisation struct {
	AttemptID string
	Tokens    TokenInfo
}

// FailAuthorisation ends the open attempt: the user or the provider refused
// at the authorize endpoint (authorisation_denied), the code exchange was
// refused by the token endpoint (Exchange: the reason follows its error
// code, e.g. invalid_client), or the attempt was abandoned (Expired:
// authorisation_expired).
type FailAuthorisation struct {
	AttemptID   string
	Expired     bool
	Exchange    bool
	ErrorCode   string
	Description string
}

// StartRefresh takes the refresh lease until LeaseUntil.
type StartRefresh struct {
	LeaseUntil     time.Time
	Trigger        string
	RefreshTokenFP string
}

// SucceedRefresh records new tokens (already stored in the vault).
type SucceedRefresh struct {
	Tokens  TokenInfo
	Rotated bool
}

// FailRefresh records one failed attempt. A transient failure becomes
// terminal (refresh_retries_exhausted) once the connection has failed
// MaxAttempts times in a row.
type FailRefresh struct {
	Terminal    bool
	ErrorCode   string
	HTTPStatus  int
	RetryAt     time.Time
	MaxAttempts int
}

// ExpireWithoutRefresh ends an active connection whose grant has no
// refresh token once its access token has expired (at Now): there is
// nothing to present to the token endpoint, so no refresh is started. It
// gives refresh.failed, terminal, error code no_refresh_token, reason
// refresh_not_granted (transition refresh.failed.not_granted, from active).
// It is refused while the connection holds a refresh token, an access
// token without expiry, or one that has not expired yet.
type ExpireWithoutRefresh struct {
	Now time.Time
}

// ErrorCodeNoRefreshToken is the error code of the refresh.failed that
// ExpireWithoutRefresh decides.
const ErrorCodeNoRefreshToken = "no_refresh_token"

// ExtendLease moves the end of the refresh lease the caller holds to
// LeaseUntil (later than the current end).
type ExtendLease struct {
	LeaseUntil time.Time
}

// RecoverLease ends a refresh whose refresher died: its lease ended (at
// Now) and nobody extended it. The refresher appended refresh.started
// immediately before it sent the token request, so the request may have
// been sent and the provider may have replaced the refresh token that the
// events (and the vault) still name. The recovery is therefore terminal,
// reason rotated_tokens_lost (error code lease_expired), and the old
// refresh token is never presented again. Only when the connection's last
// successful refresh showed that the provider keeps refresh tokens
// (RefreshTokenKept) is presenting it again harmless: the recovery is then
// a transient failure "lease_expired" and the refresh is retried. (A vault
// that is ahead of the events is not a recovery: the recoverer adopts the
// stored tokens with SucceedRefresh.)
type RecoverLease struct {
	Now time.Time
}

// RejectAccess reports that an API call using the access token with
// fingerprint AccessTokenFP was rejected with HTTPStatus: 401 or 403, or
// any status that a provider's DetectionRules mark as dead (ErrorCode is
// then "invalid_token"). A dead answer is ErrorCode "invalid_token", or a
// 401 without an error code.
type RejectAccess struct {
	HTTPStatus    int
	ErrorCode     string
	Scope         string
	AccessTokenFP string
}

// InvalidateTokens records that the stored tokens were destroyed. Reason,
// if set, is why (connection_deleted: the tokens of a connection being
// deleted are destroyed first, whatever its state, which makes it
// unauthenticated); empty, the connection's own reason.
type InvalidateTokens struct {
	ProviderRevoked bool
	Reason          Reason
}

// Update changes configuration and/or scopes. Nil leaves a field as is.
type Update struct {
	Scopes []string
	Config map[string]string
}

// Delete deletes the connection (history is kept).
type Delete struct{}

func (Create) command()                {}
func (StartAuthorisation) command()    {}
func (CompleteAuthorisation) command() {}
func (FailAuthorisation) command()     {}
func (StartRefresh) command()          {}
func (SucceedRefresh) command()        {}
func (FailRefresh) command()           {}
func (ExtendLease) command()           {}
func (ExpireWithoutRefresh) command()  {}
func (RecoverLease) command()          {}
func (RejectAccess) command()          {}
func (InvalidateTokens) command()      {}
func (Update) command()                {}
func (Delete) command()                {}

// exchangeReason is the reason of a code exchange the token endpoint
// refused with code: the reason of a token-endpoint error for the codes
// that mean the same at an exchange (invalid_grant, invalid_scope and the
// operator's invalid_client, unauthorized_client, unsupported_grant_type),
// token_endpoint_rejected for any other code, empty or unknown. Codes
// whose reason only a refresh can have (rotated_tokens_lost: tokens the
// provider rotated were lost) are not taken from the provider's word:
// authorisation.failed carries only the reasons docs/asyncapi.yaml lists.
func exchangeReason(code string) Reason {
	switch r := ReasonForErrorCode(code); r {
	case ReasonInvalidGrant, ReasonInvalidScope, ReasonInvalidClient, ReasonUnauthorizedClient, ReasonUnsupportedGrantType:
		return r
	}
	return ReasonTokenEndpointRejected
}

// scopeRE accepts Pleo-style scopes (resource:permission) and plain OAuth
// scope tokens: printable ASCII without space, quote or backslash.
var scopeRE = regexp.MustCompile(`^[\x21\x23-\x5B\x5D-\x7E]{1,128}$`)

const (
	maxScopes      = 64
	maxConfigKeys  = 64
	maxConfigValue = 4096
)

// ValidateScopes checks a scope list.
func ValidateScopes(scopes []string) error {
	if len(scopes) > maxScopes {
		return fmt.Errorf("%w: at most %d scopes", ErrInvalidCommand, maxScopes)
	}
	for _, sc := range scopes {
		if !scopeRE.MatchString(sc) {
			return fmt.Errorf("%w: invalid scope %q", ErrInvalidCommand, sc)
		}
	}
	return nil
}

// AuthorizeParamPrefix marks configuration keys that are sent as extra
// parameters of the authorization request, e.g.
// "authorize.urn_pleo_params_oauth_subject" for Pleo's optional subject.
const AuthorizeParamPrefix = "authorize."

// reservedAuthorizeParams are set by tokenline itself and may not be
// overridden from configuration.
var reservedAuthorizeParams = map[string]bool{
	"response_type": true, "client_id": true, "redirect_uri": true, "scope": true, "state": true,
	"code_challenge": true, "code_challenge_method": true, "nonce": true,
	// A request object carries its own parameters (redirect_uri among them).
	"request": true, "request_uri": true,
}

// authorizeParamName reports whether p may name an extra authorization
// request parameter: a plain token of letters, digits and "_-.:", which
// the reserved names are compared with case-insensitively.
func authorizeParamName(p string) bool {
	if p == "" || len(p) > 100 || reservedAuthorizeParams[strings.ToLower(p)] {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// ValidateConfig checks a configuration map.
func ValidateConfig(cfg map[string]string) error {
	if len(cfg) > maxConfigKeys {
		return fmt.Errorf("%w: at most %d configuration keys", ErrInvalidCommand, maxConfigKeys)
	}
	for k, v := range cfg {
		if k == "" || len(k) > 128 {
			shown := k
			if len(shown) > 64 {
				shown = shown[:64] + "..."
			}
			return fmt.Errorf("%w: invalid configuration key %q (1 to 128 bytes)", ErrInvalidCommand, shown)
		}
		if len(v) > maxConfigValue {
			return fmt.Errorf("%w: the value of configuration key %q is too long (%d bytes, at most %d)", ErrInvalidCommand, k, len(v), maxConfigValue)
		}
		if p, ok := strings.CutPrefix(k, AuthorizeParamPrefix); ok && !authorizeParamName(p) {
			return fmt.Errorf("%w: %q cannot be set as an authorization request parameter (tokenline sets it, or it is not a plain parameter name)", ErrInvalidCommand, p)
		}
	}
	return nil
}

// AuthorizeParams returns the extra authorization request parameters a
// configuration asks for (keys with AuthorizeParamPrefix, prefix removed).
func AuthorizeParams(cfg map[string]string) map[string]string {
	var out map[string]string
	for k, v := range cfg {
		if p, ok := strings.CutPrefix(k, AuthorizeParamPrefix); ok {
			if out == nil {
				out = map[string]string{}
			}
			out[p] = v
		}
	}
	return out
}

// Decide checks cmd against the connection's current state and returns the
// single event payload it produces. It does not change c; the caller appends
// the event and applies it. Decide is pure.
func Decide(c *Connection, cmd Command) (Payload, error) {
	if cr, ok := cmd.(Create); ok {
		if c.Exists() {
			return nil, ErrExists
		}
		if cr.Provider == "" {
			return nil, fmt.Errorf("%w: provider is required", ErrInvalidCommand)
		}
		if err := ValidateScopes(cr.Scopes); err != nil {
			return nil, err
		}
		if err := ValidateConfig(cr.Config); err != nil {
			return nil, err
		}
		return ConnectionCreated{Provider: cr.Provider, Scopes: slices.Clone(cr.Scopes), Config: cr.Config}, nil
	}
	if !c.Exists() {
		return nil, ErrNotFound
	}
	if _, inv := cmd.(InvalidateTokens); c.Deleted && !(inv && c.TokensHeld) {
		return nil, ErrDeleted
	}
	p, err := decide(c, cmd)
	if err != nil {
		return nil, err
	}
	if _, err := check(c.State, TransitionName(p)); err != nil {
		return nil, err
	}
	return p, nil
}

func decide(c *Connection, cmd Command) (Payload, error) {
	switch m := cmd.(type) {
	case StartAuthorisation:
		if m.AttemptID == "" || m.ExpiresAt.IsZero() {
			return nil, fmt.Errorf("%w: attempt id and expiry are required", ErrInvalidCommand)
		}
		return AuthorisationStarted{AttemptID: m.AttemptID, Scopes: slices.Clone(c.Scopes), ExpiresAt: m.ExpiresAt}, nil
	case CompleteAuthorisation:
		if c.State == StateReauthorising && m.AttemptID != c.AttemptID {
			return nil, fmt.Errorf("%w: authorisation attempt %q is not the open one", ErrInvalidCommand, m.AttemptID)
		}
		return AuthorisationCompleted{AttemptID: m.AttemptID, Tokens: m.Tokens}, nil
	case FailAuthorisation:
		if c.State == StateReauthorising && m.AttemptID != c.AttemptID {
			return nil, fmt.Errorf("%w: authorisation attempt %q is not the open one", ErrInvalidCommand, m.AttemptID)
		}
		r := ReasonAuthorisationDenied
		switch {
		case m.Expired:
			r = ReasonAuthorisationExpired
		case m.Exchange:
			r = exchangeReason(m.ErrorCode)
		}
		return AuthorisationFailed{AttemptID: m.AttemptID, Reason: r, ErrorCode: m.ErrorCode, Description: m.Description}, nil
	case StartRefresh:
		if m.LeaseUntil.IsZero() {
			return nil, fmt.Errorf("%w: lease deadline is required", ErrInvalidCommand)
		}
		trig := cmp.Or(m.Trigger, TriggerSchedule)
		return RefreshStarted{Attempt: c.TransientFailures + 1, LeaseUntil: m.LeaseUntil, Trigger: trig, RefreshTokenFP: m.RefreshTokenFP}, nil
	case SucceedRefresh:
		return RefreshSucceeded{Attempt: c.TransientFailures + 1, Tokens: m.Tokens, Rotated: m.Rotated}, nil
	case FailRefresh:
		attempt := c.TransientFailures + 1
		ev := RefreshFailed{Terminal: m.Terminal, ErrorCode: m.ErrorCode, HTTPStatus: m.HTTPStatus, Attempt: attempt}
		switch {
		case m.Terminal && c.RefreshTrigger == TriggerAccessRejected:
			ev.Reason = ReasonAccessTokenRejected
		case m.Terminal:
			ev.Reason = ReasonForErrorCode(m.ErrorCode)
		case m.MaxAttempts > 0 && attempt >= m.MaxAttempts && m.ErrorCode != CodeProviderUnavailable:
			ev.Terminal, ev.Reason = true, ReasonRefreshRetriesExhausted
		default:
			ev.RetryAt = m.RetryAt
		}
		ev.Class = "transient"
		if m.Terminal {
			ev.Class = "terminal"
		}
		return ev, nil
	case ExpireWithoutRefresh:
		if c.State == StateActive {
			switch exp := c.Tokens.AccessTokenExpiresAt; {
			case !c.TokensHeld || c.Tokens.RefreshTokenFP != "":
				return nil, fmt.Errorf("%w: the connection holds a refresh token", ErrInvalidCommand)
			case exp.IsZero():
				return nil, fmt.Errorf("%w: the access token does not expire", ErrInvalidCommand)
			case m.Now.Before(exp):
				return nil, fmt.Errorf("%w: the access token expires at %s", ErrInvalidCommand, exp.Format(time.RFC3339))
			}
		}
		return RefreshFailed{Terminal: true, Class: "terminal", ErrorCode: ErrorCodeNoRefreshToken, Attempt: c.TransientFailures + 1, Reason: ReasonRefreshNotGranted}, nil
	case ExtendLease:
		if m.LeaseUntil.IsZero() || (c.State == StateRefreshing && !m.LeaseUntil.After(c.LeaseUntil)) {
			return nil, fmt.Errorf("%w: a lease extension must end after the current lease", ErrInvalidCommand)
		}
		return RefreshLeaseExtended{LeaseUntil: m.LeaseUntil}, nil
	case RecoverLease:
		if c.State == StateRefreshing && m.Now.Before(c.LeaseUntil) {
			return nil, fmt.Errorf("%w: refresh lease held until %s", ErrInvalidCommand, c.LeaseUntil.Format(time.RFC3339))
		}
		if c.RefreshTokenKept {
			return RefreshFailed{Class: "transient", ErrorCode: "lease_expired", Attempt: c.TransientFailures + 1, RetryAt: m.Now}, nil
		}
		return RefreshFailed{Terminal: true, Class: "terminal", ErrorCode: "lease_expired", Attempt: c.TransientFailures + 1, Reason: ReasonRotatedTokensLost}, nil
	case RejectAccess:
		// A provider's detection rule may mark another status as dead
		// (DetectionRules); its error code is then invalid_token.
		dead := m.ErrorCode == "invalid_token" || (m.HTTPStatus == 401 && m.ErrorCode == "")
		if m.HTTPStatus != 401 && m.HTTPStatus != 403 && (!dead || m.HTTPStatus < 100 || m.HTTPStatus > 599) {
			return nil, fmt.Errorf("%w: only 401 and 403 rejections are reported, or a dead token's answer (invalid_token) with another status", ErrInvalidCommand)
		}
		ev := AccessRejected{HTTPStatus: m.HTTPStatus, ErrorCode: m.ErrorCode, Scope: m.Scope, AccessTokenFP: m.AccessTokenFP}
		// A dead-token answer against the token that a rejection-triggered
		// refresh just issued means a refresh cannot restore access.
		if dead && c.State == StateActive && c.RecoveringFromRejection &&
			m.AccessTokenFP != "" && m.AccessTokenFP == c.Tokens.AccessTokenFP {
			ev.Terminal, ev.Reason = true, ReasonAccessTokenRejected
		}
		// Nor can it for a grant without a refresh token: a dead-token
		// answer against its token (named, or not named) ends it.
		if dead && c.State == StateActive && c.TokensHeld && c.Tokens.RefreshTokenFP == "" &&
			(m.AccessTokenFP == "" || m.AccessTokenFP == c.Tokens.AccessTokenFP) {
			ev.Terminal, ev.Reason = true, ReasonAccessTokenRejected
		}
		return ev, nil
	case InvalidateTokens:
		r := cmp.Or(m.Reason, c.Reason)
		return TokensInvalidated{Reason: r, AccessTokenFP: c.Tokens.AccessTokenFP, RefreshTokenFP: c.Tokens.RefreshTokenFP, ProviderRevoked: m.ProviderRevoked}, nil
	case Update:
		if m.Scopes == nil && m.Config == nil {
			return nil, fmt.Errorf("%w: nothing to update", ErrInvalidCommand)
		}
		if err := ValidateScopes(m.Scopes); err != nil {
			return nil, err
		}
		if err := ValidateConfig(m.Config); err != nil {
			return nil, err
		}
		return ConnectionUpdated{Scopes: slices.Clone(m.Scopes), Config: m.Config}, nil
	case Delete:
		return ConnectionDeleted{}, nil
	}
	return nil, fmt.Errorf("%w: unknown command %T", ErrInvalidCommand, cmd)
}
