package sandbox

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/pkce"
)

// store is the sandbox's fosite storage. It replaces fosite's
// storage.MemoryStore for three reasons:
//
//   - MemoryStore.RevokeRefreshToken writes the RefreshTokens map while
//     holding only refreshTokenRequestIDsMutex, so it races with
//     GetRefreshTokenSession (which holds refreshTokensMutex); concurrent
//     refreshes trip the race detector or crash with a concurrent map write.
//   - MemoryStore indexes only the latest access and refresh token of a
//     grant, so "revoke the grant" cannot reach older tokens. Here every token
//     is indexed by its grant (fosite's request ID, which all tokens of one
//     authorisation share across rotations).
//   - MemoryStore hands out and keeps the very requester objects fosite is
//     working on; fosite mutates sessions in place (for example the
//     authorisation code's session during the code exchange), which is a data
//     race as soon as another request reads the same record. This store keeps
//     private snapshots and returns copies.
//
// Everything the store holds expires and is evicted (see sweep), and the
// number of authorisation codes and of grants is capped (storeLimits), so
// that memory stays bounded whatever clients send.
//
// All methods take one mutex; the critical sections are map operations and
// shallow copies, so a single lock is not a bottleneck at sandbox scale.
// Check-then-act sequences that span several store calls (a refresh reads the
// token, then rotates it) are made atomic by Server.tokenMu, not here.
type store struct {
	mu sync.Mutex

	client *fosite.DefaultClient // replaced, never mutated, on secret rotation

	codes   map[string]*codeRecord      // authorize code signature -> record
	pkce    map[string]fosite.Requester // authorize code signature -> PKCE request
	access  map[string]*accessRecord    // access token signature -> record
	refresh map[string]*refreshRecord   // refresh token signature -> record
	grants  map[string]*grant           // fosite request ID -> tokens of that grant

	hooks  storeHooks
	limits storeLimits
	// lastSweep is when sweep last ran, on the limits' clock.
	lastSweep time.Time
}

// storeLimits bound what the store holds.
type storeLimits struct {
	now          func() time.Time
	codeLifetime time.Duration
	maxCodes     int // codes held (unexpired, used or not)
	maxGrants    int // grants held (until their last token or code expired)
}

// sweepEvery is how often (on the sandbox clock) creating a code or a token
// also evicts what has expired.
const sweepEvery = time.Minute

// maxTombstonesPerGrant bounds the replaced refresh tokens remembered per
// grant (for reuse detection). A token replaced longer ago than that many
// rotations is forgotten: presenting it gets invalid_grant without revoking
// the grant. Tokens replaced by tokenline are presented again, if ever, right
// after the rotation.
const maxTombstonesPerGrant = 100

// errStoreFull is returned when a new authorisation code or grant would
// exceed a cap.
type errStoreFull struct{ what string }

func (e *errStoreFull) Error() string { return "sandbox: " + e.what }

// storeHooks lets the store report events that only it can recognise.
type storeHooks struct {
	// grantRevoked is called once per grant whose live tokens were revoked.
	grantRevoked func(requestID string)
	// refreshReuse is called when a replaced (rotated) refresh token is
	// presented again.
	refreshReuse func(requestID string)
}

type codeRecord struct {
	req     fosite.Requester
	active  bool
	expires time.Time
}

type accessRecord struct {
	req     fosite.Requester
	expires time.Time
}

// refreshState is the life cycle of one refresh token.
type refreshState int

const (
	refreshActive  refreshState = iota // may be used once
	refreshRotated                     // replaced by a newer token of the same grant
	refreshRevoked                     // revoked with its grant
)

// refreshRecord is one refresh token. Once replaced or revoked, req is a
// tombstone that keeps only the grant's request ID (all fosite needs to
// revoke the grant on reuse) and the client.
type refreshRecord struct {
	req     fosite.Requester
	state   refreshState
	expires time.Time
}

// grant indexes every token signature issued under one authorisation.
type grant struct {
	access  map[string]struct{}
	refresh map[string]struct{}
	codes   map[string]struct{}
	revoked bool
	// tombstones lists the grant's replaced refresh tokens, oldest first.
	tombstones []string
	// refreshes counts the grant's successful refreshes (rotations).
	refreshes int64
}

func (g *grant) empty() bool { return len(g.access) == 0 && len(g.refresh) == 0 && len(g.codes) == 0 }

// expiresAt reads a token's expiry from its session (zero: none).
func expiresAt(req fosite.Requester, tt fosite.TokenType) time.Time {
	if sess := req.GetSession(); sess != nil {
		return sess.GetExpiresAt(tt)
	}
	return time.Time{}
}

// tombstone is what is kept of a refresh token after it was replaced or
// revoked.
func tombstone(req fosite.Requester) fosite.Requester {
	return &fosite.Request{ID: req.GetID(), Client: req.GetClient(), Session: &fosite.DefaultSession{}}
}

func newStore(client *fosite.DefaultClient, hooks storeHooks, limits storeLimits) *store {
	return &store{
		client:  client,
		codes:   make(map[string]*codeRecord),
		pkce:    make(map[string]fosite.Requester),
		access:  make(map[string]*accessRecord),
		refresh: make(map[string]*refreshRecord),
		grants:  make(map[string]*grant),
		hooks:   hooks,
		limits:  limits,
	}
}

// Compile-time proof that the store satisfies every interface the composed
// handlers type-assert.
var (
	_ fosite.Storage                = (*store)(nil)
	_ oauth2.CoreStorage            = (*store)(nil)
	_ oauth2.TokenRevocationStorage = (*store)(nil)
	_ pkce.PKCERequestStorage       = (*store)(nil)
)

// snapshot copies a requester so that neither side can mutate what the
// other holds. fosite stores *fosite.Request values (the result of
// Sanitize); any other implementation is kept as is.
func snapshot(req fosite.Requester) fosite.Requester {
	r, ok := req.(*fosite.Request)
	if !ok || r == nil {
		return req
	}
	c := *r
	if r.Session != nil {
		c.Session = r.Session.Clone()
	}
	c.RequestedScope = slices.Clone(r.RequestedScope)
	c.GrantedScope = slices.Clone(r.GrantedScope)
	c.RequestedAudience = slices.Clone(r.RequestedAudience)
	c.GrantedAudience = slices.Clone(r.GrantedAudience)
	if r.Form != nil {
		c.Form = make(map[string][]string, len(r.Form))
		for k, v := range r.Form {
			c.Form[k] = slices.Clone(v)
		}
	}
	return &c
}

// Request parameters kept with stored requests: only those fosite reads back
// (the code exchange compares redirect_uri, PKCE reads the challenge). The
// rest, state and any extra parameter included, is dropped, so that what a
// client sends does not decide what the store holds; token requests' forms
// (which carry the code, the verifier or the refresh token) are not kept.
var (
	codeFormKeys = []string{"redirect_uri"}
	pkceFormKeys = []string{"code_challenge", "code_challenge_method"}
)

// keepForm returns a snapshot of req whose form has only the given keys. The
// kept strings (form values, scopes) are copied: parsed parameters are
// substrings of the whole request body or query, which a kept substring would
// otherwise keep alive (10,000 codes of 8 KiB requests held 113 MB).
func keepForm(req fosite.Requester, keys ...string) fosite.Requester {
	c := snapshot(req)
	if r, ok := c.(*fosite.Request); ok {
		form := url.Values{}
		for _, k := range keys {
			if vs, ok := r.Form[k]; ok {
				form[k] = cloneStrings(vs)
			}
		}
		r.Form = form
		r.RequestedScope = cloneStrings(r.RequestedScope)
		r.GrantedScope = cloneStrings(r.GrantedScope)
		r.RequestedAudience = cloneStrings(r.RequestedAudience)
		r.GrantedAudience = cloneStrings(r.GrantedAudience)
	}
	return c
}

// cloneStrings copies a string slice and each string's bytes.
func cloneStrings[S ~[]string](in S) S {
	if in == nil {
		return nil
	}
	out := make(S, len(in))
	for i, v := range in {
		out[i] = strings.Clone(v)
	}
	return out
}

// grantFor returns the grant index for a request ID, creating it.
// Callers hold s.mu.
func (s *store) grantFor(requestID string) *grant {
	g := s.grants[requestID]
	if g == nil {
		g = &grant{
			access:  make(map[string]struct{}),
			refresh: make(map[string]struct{}),
			codes:   make(map[string]struct{}),
		}
		s.grants[requestID] = g
	}
	return g
}

// ---- fosite.ClientManager ----

func (s *store) GetClient(_ context.Context, id string) (fosite.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == nil || id != s.client.ID {
		return nil, fosite.ErrNotFound
	}
	return s.client, nil
}

// ClientAssertionJWTValid is part of fosite.ClientManager. The sandbox does
// not support private_key_jwt, so no JTI is ever known.
func (s *store) ClientAssertionJWTValid(context.Context, string) error { return nil }

// SetClientAssertionJWT is part of fosite.ClientManager; see
// ClientAssertionJWTValid.
func (s *store) SetClientAssertionJWT(context.Context, string, time.Time) error { return nil }

// setClient swaps the registered client (used by secret rotation).
func (s *store) setClient(c *fosite.DefaultClient) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.client = c
}

// ---- oauth2.AuthorizeCodeStorage ----

// CreateAuthorizeCodeSession stores a new code, refusing it with
// errStoreFull when the code or grant cap is reached even after evicting
// what has expired. The code's expiry is set here from the sandbox clock
// (fosite set it from the wall clock), so that clockStrategy and sweep agree.
func (s *store) CreateAuthorizeCodeSession(_ context.Context, code string, req fosite.Requester) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.limits.now()
	s.maybeSweep(now)
	_, known := s.grants[req.GetID()]
	if len(s.codes) >= s.limits.maxCodes || (!known && len(s.grants) >= s.limits.maxGrants) {
		s.sweep(now)
	}
	if len(s.codes) >= s.limits.maxCodes {
		return &errStoreFull{fmt.Sprintf("%d authorisation codes are held, the cap; codes expire %v after issue", len(s.codes), s.limits.codeLifetime)}
	}
	if !known && len(s.grants) >= s.limits.maxGrants {
		return &errStoreFull{fmt.Sprintf("%d grants are held, the cap; a grant is dropped when its last token expires", len(s.grants))}
	}
	c := keepForm(req, codeFormKeys...)
	exp := now.Add(s.limits.codeLifetime).UTC()
	if sess := c.GetSession(); sess != nil {
		sess.SetExpiresAt(fosite.AuthorizeCode, exp)
	}
	s.codes[code] = &codeRecord{req: c, active: true, expires: exp}
	s.grantFor(req.GetID()).codes[code] = struct{}{}
	return nil
}

func (s *store) GetAuthorizeCodeSession(_ context.Context, code string, _ fosite.Session) (fosite.Requester, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.codes[code]
	// An expired code is as good as evicted: fosite then answers
	// invalid_grant (RFC 6749 section 5.2). Its own expiry check would
	// answer invalid_request.
	if !ok || rec.expires.Before(s.limits.now()) {
		return nil, fosite.ErrNotFound
	}
	if !rec.active {
		// fosite needs the requester to revoke the tokens issued for
		// this code (RFC 6749 section 4.1.2).
		return snapshot(rec.req), fosite.ErrInvalidatedAuthorizeCode
	}
	return snapshot(rec.req), nil
}

func (s *store) InvalidateAuthorizeCodeSession(_ context.Context, code string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.codes[code]
	if !ok {
		return fosite.ErrNotFound
	}
	rec.active = false
	return nil
}

// ---- pkce.PKCERequestStorage ----

func (s *store) CreatePKCERequestSession(_ context.Context, signature string, req fosite.Requester) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pkce[signature] = keepForm(req, pkceFormKeys...)
	return nil
}

func (s *store) GetPKCERequestSession(_ context.Context, signature string, _ fosite.Session) (fosite.Requester, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	req, ok := s.pkce[signature]
	if !ok {
		return nil, fosite.ErrNotFound
	}
	return snapshot(req), nil
}

func (s *store) DeletePKCERequestSession(_ context.Context, signature string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pkce, signature)
	return nil
}

// ---- oauth2.AccessTokenStorage ----

func (s *store) CreateAccessTokenSession(_ context.Context, signature string, req fosite.Requester) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maybeSweep(s.limits.now())
	s.access[signature] = &accessRecord{req: keepForm(req), expires: expiresAt(req, fosite.AccessToken)}
	s.grantFor(req.GetID()).access[signature] = struct{}{}
	return nil
}

func (s *store) GetAccessTokenSession(_ context.Context, signature string, _ fosite.Session) (fosite.Requester, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.access[signature]
	if !ok {
		return nil, fosite.ErrNotFound
	}
	return snapshot(rec.req), nil
}

func (s *store) DeleteAccessTokenSession(_ context.Context, signature string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleteAccess(signature)
	return nil
}

// deleteAccess removes an access token. Callers hold s.mu.
func (s *store) deleteAccess(signature string) {
	rec, ok := s.access[signature]
	if !ok {
		return
	}
	delete(s.access, signature)
	if g := s.grants[rec.req.GetID()]; g != nil {
		delete(g.access, signature)
	}
}

// ---- oauth2.RefreshTokenStorage ----

func (s *store) CreateRefreshTokenSession(_ context.Context, signature, _ string, req fosite.Requester) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh[signature] = &refreshRecord{req: keepForm(req), state: refreshActive, expires: expiresAt(req, fosite.RefreshToken)}
	s.grantFor(req.GetID()).refresh[signature] = struct{}{}
	return nil
}

func (s *store) GetRefreshTokenSession(_ context.Context, signature string, _ fosite.Session) (fosite.Requester, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.refresh[signature]
	if !ok {
		return nil, fosite.ErrNotFound
	}
	if rec.state != refreshActive {
		// fosite's refresh handler treats ErrInactiveToken as reuse and
		// needs the requester to revoke the rest of the grant.
		return snapshot(rec.req), fosite.ErrInactiveToken
	}
	return snapshot(rec.req), nil
}

// DeleteRefreshTokenSession is called by fosite only when an inactive refresh
// token is presented (reuse detection). The record is kept as a tombstone so
// that every later presentation takes the same path (invalid_grant, grant
// revoked) and is counted as reuse again if it had been rotated.
func (s *store) DeleteRefreshTokenSession(_ context.Context, signature string) error {
	s.mu.Lock()
	rec, ok := s.refresh[signature]
	var reuseOf string
	if ok && rec.state == refreshRotated {
		reuseOf = rec.req.GetID()
	}
	s.mu.Unlock()
	if reuseOf != "" && s.hooks.refreshReuse != nil {
		s.hooks.refreshReuse(reuseOf)
	}
	return nil
}

// RotateRefreshToken retires every token of the grant before fosite stores
// the new pair: all previous access and refresh tokens are invalid at once.
func (s *store) RotateRefreshToken(_ context.Context, requestID string, _ string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.grants[requestID]
	if g == nil {
		return nil
	}
	for sig := range g.refresh {
		if rec := s.refresh[sig]; rec != nil && rec.state == refreshActive {
			rec.state = refreshRotated
			rec.req = tombstone(rec.req)
			g.tombstones = append(g.tombstones, sig)
		}
	}
	// Forget the oldest replaced tokens beyond the per-grant bound.
	if over := len(g.tombstones) - maxTombstonesPerGrant; over > 0 {
		for _, sig := range g.tombstones[:over] {
			delete(s.refresh, sig)
			delete(g.refresh, sig)
		}
		g.tombstones = slices.Delete(g.tombstones, 0, over)
	}
	g.refreshes++
	for sig := range g.access {
		s.deleteAccess(sig)
	}
	return nil
}

// ---- oauth2.TokenRevocationStorage ----

// RevokeRefreshToken revokes the whole grant: fosite calls it (together with
// RevokeAccessToken) for RFC 7009 revocation, refresh-token reuse and
// authorisation-code replay.
func (s *store) RevokeRefreshToken(_ context.Context, requestID string) error {
	s.revokeGrants([]string{requestID})
	return nil
}

// RevokeAccessToken revokes the whole grant; see RevokeRefreshToken.
func (s *store) RevokeAccessToken(_ context.Context, requestID string) error {
	s.revokeGrants([]string{requestID})
	return nil
}

// revokeGrants revokes the given grants (nil: every grant) and returns how
// many had something live to revoke (an access token, an active refresh token
// or an unused authorisation code).
func (s *store) revokeGrants(requestIDs []string) int {
	s.mu.Lock()
	if requestIDs == nil {
		requestIDs = slices.Collect(maps.Keys(s.grants))
	}
	var revoked []string
	for _, id := range requestIDs {
		g := s.grants[id]
		if g == nil {
			continue
		}
		live := len(g.access) > 0
		for sig := range g.access {
			s.deleteAccess(sig)
		}
		for sig := range g.refresh {
			if rec := s.refresh[sig]; rec != nil && rec.state == refreshActive {
				rec.state = refreshRevoked
				rec.req = tombstone(rec.req)
				live = true
			}
		}
		for sig := range g.codes {
			if rec := s.codes[sig]; rec != nil && rec.active {
				rec.active = false
				live = true
			}
		}
		if live && !g.revoked {
			g.revoked = true
			revoked = append(revoked, id)
		}
	}
	s.mu.Unlock()
	if s.hooks.grantRevoked != nil {
		for _, id := range revoked {
			s.hooks.grantRevoked(id)
		}
	}
	return len(revoked)
}

// expireRefreshTokens makes every active refresh token expire now and
// returns how many were changed. Already expired tokens are not counted.
func (s *store) expireRefreshTokens(now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	past := now.Add(-time.Second).UTC()
	for _, rec := range s.refresh {
		if rec.state != refreshActive {
			continue
		}
		sess := rec.req.GetSession()
		if sess == nil {
			continue
		}
		if exp := sess.GetExpiresAt(fosite.RefreshToken); !exp.IsZero() && !exp.After(now) {
			continue
		}
		// Copy on write: the record's requester is private, but copying
		// keeps the invariant that stored snapshots are never mutated.
		c := snapshot(rec.req)
		c.GetSession().SetExpiresAt(fosite.RefreshToken, past)
		rec.req = c
		rec.expires = past
		n++
	}
	return n
}

// maybeSweep runs sweep if it has not run for sweepEvery. Callers hold s.mu.
func (s *store) maybeSweep(now time.Time) {
	if now.Sub(s.lastSweep) >= sweepEvery || now.Before(s.lastSweep) {
		s.sweep(now)
	}
}

// sweep evicts every code and token whose expiry has passed (used or not,
// replaced or revoked or not), and every grant left with nothing. Presenting
// an evicted code or token gets invalid_grant, as presenting it expired
// would. Callers hold s.mu.
func (s *store) sweep(now time.Time) {
	s.lastSweep = now
	for sig, rec := range s.codes {
		if rec.expires.Before(now) {
			delete(s.codes, sig)
			delete(s.pkce, sig)
			if g := s.grants[rec.req.GetID()]; g != nil {
				delete(g.codes, sig)
			}
		}
	}
	for sig, rec := range s.access {
		if !rec.expires.IsZero() && rec.expires.Before(now) {
			s.deleteAccess(sig)
		}
	}
	for sig, rec := range s.refresh {
		if !rec.expires.IsZero() && rec.expires.Before(now) {
			delete(s.refresh, sig)
			if g := s.grants[rec.req.GetID()]; g != nil {
				delete(g.refresh, sig)
			}
		}
	}
	for id, g := range s.grants {
		if len(g.tombstones) > 0 {
			g.tombstones = slices.DeleteFunc(g.tombstones, func(sig string) bool { _, ok := g.refresh[sig]; return !ok })
		}
		if g.empty() {
			delete(s.grants, id)
		}
	}
	// PKCE sessions whose code is gone (fosite deletes them on exchange;
	// this catches any other leftovers).
	for sig := range s.pkce {
		if _, ok := s.codes[sig]; !ok {
			delete(s.pkce, sig)
		}
	}
}

// holding is what the store holds, after evicting what has expired.
type holding struct {
	codes, grants, accessTokens, refreshTokens int
	// refreshesPerGrant maps a number of successful refreshes to how
	// many held grants have had exactly that many.
	refreshesPerGrant map[int64]int64
}

func (s *store) holding() holding {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep(s.limits.now())
	h := holding{codes: len(s.codes), grants: len(s.grants), accessTokens: len(s.access), refreshTokens: len(s.refresh),
		refreshesPerGrant: map[int64]int64{}}
	for _, g := range s.grants {
		h.refreshesPerGrant[g.refreshes]++
	}
	return h
}

// secretHasher implements fosite.Hasher with SHA-256 and a constant-time
// comparison. fosite's default (bcrypt, cost 12) costs ~250 ms per token
// request, which would turn a 200-way concurrent refresh test into minutes.
// Sandbox secrets are 32 random bytes, so a fast hash loses nothing.
type secretHasher struct{}

var errSecretMismatch = errors.New("sandbox: client secret does not match")

func (secretHasher) Hash(_ context.Context, data []byte) ([]byte, error) {
	sum := sha256.Sum256(data)
	return sum[:], nil
}

func (secretHasher) Compare(_ context.Context, hash, data []byte) error {
	sum := sha256.Sum256(data)
	if subtle.ConstantTimeCompare(hash, sum[:]) != 1 {
		return errSecretMismatch
	}
	return nil
}
