package sandbox

import (
	"maps"
	"sync"
)

// Stats is a snapshot of the sandbox's counters. It is what Server.Stats
// returns and what GET /sandbox/admin/stats serves as JSON; the JSON field
// names are stable so tests and demos can read them.
//
// Token-endpoint counters (TokenRequests, Successes, Failures, Errors,
// FaultsInjected) count requests that reached the token endpoint with the
// POST method, including those answered by an injected fault. Every such
// request is exactly one success or one failure.
type Stats struct {
	// TokenRequests counts token-endpoint requests by grant_type.
	TokenRequests TokenRequestStats `json:"token_requests"`
	// Successes counts token-endpoint requests answered with tokens.
	Successes int64 `json:"successes"`
	// Failures counts token-endpoint requests answered with an error,
	// injected faults included.
	Failures int64 `json:"failures"`
	// Errors counts failed token-endpoint requests by the OAuth error code
	// in the response body ("invalid_grant", "invalid_client",
	// "temporarily_unavailable", ...). It is never nil.
	Errors map[string]int64 `json:"errors"`
	// FaultsInjected counts token-endpoint requests that were answered by a
	// fault set with POST /sandbox/admin/faults.
	FaultsInjected int64 `json:"faults_injected"`
	// Revocations counts grants (authorisations) that were revoked while
	// they still had a live token or an unused authorisation code, whatever
	// the cause: the RFC 7009 endpoint, POST /sandbox/admin/revoke-grants,
	// refresh-token reuse, or replay of an authorisation code. A grant is
	// counted once.
	Revocations int64 `json:"revocations"`
	// RefreshTokenReuse counts refresh requests that presented a refresh
	// token which had already been replaced by rotation. Each one revoked
	// its grant (if it was still live). This is the signature of a client
	// that retried a refresh with a stale token.
	RefreshTokenReuse int64 `json:"refresh_token_reuse"`
	// AuthorizationsRefusedFull counts authorisation requests refused
	// (redirected with error=temporarily_unavailable) because the cap on
	// authorisation codes or grants was reached (Config.MaxCodes,
	// Config.MaxGrants).
	AuthorizationsRefusedFull int64 `json:"authorizations_refused_full"`
	// RefreshTokensWithheld counts code exchanges answered without a
	// refresh token by the grant mode (never, or scope:<scope> without
	// the scope); RefreshTokensKept counts refreshes answered without a
	// new one, the presented one staying valid (keep, or scope:<scope>
	// without the scope). See POST /sandbox/admin/grant-mode.
	RefreshTokensWithheld int64 `json:"refresh_tokens_withheld"`
	RefreshTokensKept     int64 `json:"refresh_tokens_kept"`

	// Held is what the sandbox holds in memory right now, after evicting
	// what has expired. It is state, not a counter: reset-stats leaves it.
	Held HeldStats `json:"held"`
	// RefreshesPerGrant maps a number of successful refreshes (rotations)
	// to how many held grants have had exactly that many, e.g. {"3": 10}:
	// ten grants, each refreshed three times. With one grant per
	// connection, "every connection refreshed once per cycle" reads as a
	// single key equal to the number of cycles. Grants are dropped (and
	// leave this map) once their last token expires. It is never nil.
	RefreshesPerGrant map[string]int64 `json:"refreshes_per_grant"`
}

// HeldStats counts what the sandbox holds in memory (everything is in
// memory; nothing survives a restart).
type HeldStats struct {
	// Codes counts authorisation codes not yet expired, used or not.
	Codes int `json:"authorization_codes"`
	// Grants counts grants (authorisations) with a token or code not yet
	// expired, revoked or not.
	Grants int `json:"grants"`
	// AccessTokens counts live access tokens.
	AccessTokens int `json:"access_tokens"`
	// RefreshTokens counts refresh tokens not yet expired: active ones and
	// the remembered replaced or revoked ones (for reuse detection).
	RefreshTokens int `json:"refresh_tokens"`
}

// TokenRequestStats counts token-endpoint requests by grant type.
type TokenRequestStats struct {
	// AuthorizationCode counts grant_type=authorization_code requests.
	AuthorizationCode int64 `json:"authorization_code"`
	// RefreshToken counts grant_type=refresh_token requests.
	RefreshToken int64 `json:"refresh_token"`
	// Other counts requests with any other or a missing grant_type.
	Other int64 `json:"other"`
}

// counters holds the live counters behind Stats.
type counters struct {
	mu sync.Mutex
	s  Stats
}

func newCounters() *counters {
	return &counters{s: Stats{Errors: map[string]int64{}}}
}

func (c *counters) snapshot() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.s
	out.Errors = maps.Clone(c.s.Errors)
	return out
}

func (c *counters) reset() { c.update(func(s *Stats) { *s = Stats{Errors: map[string]int64{}} }) }

// update changes the counters under the lock.
func (c *counters) update(f func(s *Stats)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f(&c.s)
}

func (c *counters) tokenRequest(grantType string) {
	c.update(func(s *Stats) {
		switch grantType {
		case "authorization_code":
			s.TokenRequests.AuthorizationCode++
		case "refresh_token":
			s.TokenRequests.RefreshToken++
		default:
			s.TokenRequests.Other++
		}
	})
}

func (c *counters) failure(errorCode string, fault bool) {
	c.update(func(s *Stats) {
		s.Failures++
		s.Errors[errorCode]++
		if fault {
			s.FaultsInjected++
		}
	})
}

func (c *counters) success()     { c.update(func(s *Stats) { s.Successes++ }) }
func (c *counters) revocation()  { c.update(func(s *Stats) { s.Revocations++ }) }
func (c *counters) reuse()       { c.update(func(s *Stats) { s.RefreshTokenReuse++ }) }
func (c *counters) refusedFull() { c.update(func(s *Stats) { s.AuthorizationsRefusedFull++ }) }
