package porttest

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// TokenEndpointHarness is one token endpoint under test and what the
// contract needs around it.
type TokenEndpointHarness struct {
	// Endpoint is the implementation under test, talking to a fresh
	// authorization server.
	Endpoint domain.TokenEndpoint
	// Approve plays the user approving the authorization request authURL
	// (from Endpoint.AuthCodeURL) and returns the authorization code the
	// server redirects back with.
	Approve func(t *testing.T, authURL string) string
	// Scopes the client may request (at least one).
	Scopes []string
	// ClientSecret is the client's correct secret.
	ClientSecret string
	// Now reads the authorization server's clock.
	Now func() time.Time
}

// OpenTokenEndpoint returns a harness on a fresh authorization server.
type OpenTokenEndpoint func(t *testing.T) TokenEndpointHarness

// TokenEndpoint runs the contract of domain.TokenEndpoint against a
// Pleo-like server (PKCE S256, refresh-token rotation with reuse
// detection, RFC 7009 revocation).
func TokenEndpoint(t *testing.T, open OpenTokenEndpoint) {
	run(t, open, []subtest[OpenTokenEndpoint]{
		{"AuthCodeURL", teAuthCodeURL},
		{"ExchangeOnce", teExchangeOnce},
		{"WrongVerifierIsTerminal", teWrongVerifier},
		{"UnknownCodeIsTerminal", teUnknownCode},
		{"RefreshRotates", teRefreshRotates},
		{"ReplacedRefreshTokenRevokesGrant", teReuse},
		{"RevokeRefreshToken", teRevoke},
		{"RevokeUnknownOrEmptyToken", teRevokeUnknown},
		{"WrongClientSecret", teWrongSecret},
		{"RefreshWithoutToken", teNoRefreshToken},
		{"ConcurrentRefreshesOneWinner", teConcurrentRefresh},
	})
}

const testVerifier = "porttest-verifier-0123456789-abcdefghijklmnopqrstuvwxyz"

func challenge(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// wantFailure checks that err is a *domain.Failure with the given class,
// code and (if non-zero) HTTP status.
func wantFailure(t *testing.T, what string, err error, terminal bool, code string, status int) {
	t.Helper()
	var f *domain.Failure
	if !errors.As(err, &f) {
		t.Fatalf("%s: %v, want a *domain.Failure", what, err)
	}
	if f.Terminal != terminal || f.Code != code || (status != 0 && f.Status != status) {
		t.Fatalf("%s: %+v, want terminal=%v code=%s status=%d", what, f, terminal, code, status)
	}
}

// authorise runs the authorization code flow and returns the tokens.
func authorise(t *testing.T, h TokenEndpointHarness) domain.Tokens {
	t.Helper()
	code := h.Approve(t, h.Endpoint.AuthCodeURL("porttest-state-"+NewConnectionID(), testVerifier, h.Scopes, nil))
	tok, err := h.Endpoint.Exchange(ctxT(t), code, testVerifier, h.Scopes)
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	return tok
}

func teAuthCodeURL(t *testing.T, open OpenTokenEndpoint) {
	h := open(t)
	state := "porttest-state-" + NewConnectionID()
	plain := h.Endpoint.AuthCodeURL(state, testVerifier, h.Scopes, nil)
	u, err := url.Parse(plain)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if q.Get("response_type") != "code" || q.Get("client_id") == "" || q.Get("state") != state ||
		q.Get("code_challenge") != challenge(testVerifier) || q.Get("code_challenge_method") != "S256" ||
		q.Get("scope") != strings.Join(h.Scopes, " ") {
		t.Fatalf("authorization URL lacks a parameter: %s", plain)
	}
	if strings.Contains(plain, testVerifier) {
		t.Fatal("the authorization URL carries the PKCE verifier")
	}
	extra := map[string]string{"urn_pleo_params_oauth_subject": "company-1"}
	for _, k := range []string{"response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method"} {
		extra[k] = "overridden"
	}
	withExtra, err := url.Parse(h.Endpoint.AuthCodeURL(state, testVerifier, h.Scopes, extra))
	if err != nil {
		t.Fatal(err)
	}
	eq := withExtra.Query()
	if eq.Get("urn_pleo_params_oauth_subject") != "company-1" {
		t.Fatal("extra parameter missing")
	}
	for k := range q {
		if eq.Get(k) != q.Get(k) || len(eq[k]) != 1 {
			t.Fatalf("extra parameters override %s: %q, want %q", k, eq[k], q.Get(k))
		}
	}
	// The URL is one the server accepts.
	if code := h.Approve(t, plain); code == "" {
		t.Fatal("no code")
	}
}

func teExchangeOnce(t *testing.T, open OpenTokenEndpoint) {
	h := open(t)
	code := h.Approve(t, h.Endpoint.AuthCodeURL("porttest-state-"+NewConnectionID(), testVerifier, h.Scopes, nil))
	tok, err := h.Endpoint.Exchange(ctxT(t), code, testVerifier, h.Scopes)
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken == "" || tok.RefreshToken == "" || tok.AccessToken == tok.RefreshToken || !tok.Expiry.After(h.Now()) ||
		!slices.Equal(tok.Scopes, h.Scopes) || !strings.EqualFold(tok.TokenType, "bearer") {
		t.Fatalf("exchange returned incomplete tokens (expiry %v, scopes %v, type %q)", tok.Expiry, tok.Scopes, tok.TokenType)
	}
	// A replayed code is refused and revokes what it gave.
	_, err = h.Endpoint.Exchange(ctxT(t), code, testVerifier, h.Scopes)
	wantFailure(t, "replayed code", err, true, "invalid_grant", 400)
	_, _, err = h.Endpoint.Refresh(ctxT(t), tok.RefreshToken, h.Scopes)
	wantFailure(t, "refresh after code replay", err, true, "invalid_grant", 400)
}

func teWrongVerifier(t *testing.T, open OpenTokenEndpoint) {
	h := open(t)
	code := h.Approve(t, h.Endpoint.AuthCodeURL("porttest-state-"+NewConnectionID(), testVerifier, h.Scopes, nil))
	_, err := h.Endpoint.Exchange(ctxT(t), code, testVerifier+"-wrong", h.Scopes)
	wantFailure(t, "wrong verifier", err, true, "invalid_grant", 400)
}

func teUnknownCode(t *testing.T, open OpenTokenEndpoint) {
	h := open(t)
	_, err := h.Endpoint.Exchange(ctxT(t), "never-issued-code", testVerifier, h.Scopes)
	wantFailure(t, "unknown code", err, true, "invalid_grant", 400)
}

func teRefreshRotates(t *testing.T, open OpenTokenEndpoint) {
	h := open(t)
	first := authorise(t, h)
	second, rotated, err := h.Endpoint.Refresh(ctxT(t), first.RefreshToken, h.Scopes)
	if err != nil {
		t.Fatal(err)
	}
	if !rotated || second.RefreshToken == "" || second.RefreshToken == first.RefreshToken || second.AccessToken == "" ||
		second.AccessToken == first.AccessToken || !second.Expiry.After(h.Now()) || !slices.Equal(second.Scopes, h.Scopes) {
		t.Fatalf("refresh did not rotate: rotated=%v scopes %v", rotated, second.Scopes)
	}
	third, rotated, err := h.Endpoint.Refresh(ctxT(t), second.RefreshToken, h.Scopes)
	if err != nil || !rotated || third.RefreshToken == second.RefreshToken {
		t.Fatalf("second refresh: rotated=%v err=%v", rotated, err)
	}
}

func teReuse(t *testing.T, open OpenTokenEndpoint) {
	h := open(t)
	first := authorise(t, h)
	second, _, err := h.Endpoint.Refresh(ctxT(t), first.RefreshToken, h.Scopes)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = h.Endpoint.Refresh(ctxT(t), first.RefreshToken, h.Scopes)
	wantFailure(t, "replaced refresh token", err, true, "invalid_grant", 400)
	// Reuse revokes the grant: the newest refresh token is dead too.
	_, _, err = h.Endpoint.Refresh(ctxT(t), second.RefreshToken, h.Scopes)
	wantFailure(t, "refresh token of a grant revoked by reuse", err, true, "invalid_grant", 400)
}

func teRevoke(t *testing.T, open OpenTokenEndpoint) {
	h := open(t)
	tok := authorise(t, h)
	if err := h.Endpoint.Revoke(ctxT(t), tok.RefreshToken, "refresh_token"); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	_, _, err := h.Endpoint.Refresh(ctxT(t), tok.RefreshToken, h.Scopes)
	wantFailure(t, "refresh after revocation", err, true, "invalid_grant", 400)
	// Revoking again is not an error (RFC 7009: invalid tokens get 200).
	if err := h.Endpoint.Revoke(ctxT(t), tok.RefreshToken, "refresh_token"); err != nil {
		t.Fatalf("second revoke: %v", err)
	}
	// Another grant is untouched.
	other := authorise(t, h)
	if err := h.Endpoint.Revoke(ctxT(t), other.AccessToken, "access_token"); err != nil {
		t.Fatalf("revoke access token: %v", err)
	}
}

func teRevokeUnknown(t *testing.T, open OpenTokenEndpoint) {
	h := open(t)
	for _, hint := range []string{"refresh_token", "access_token", ""} {
		if err := h.Endpoint.Revoke(ctxT(t), "never-issued-token", hint); err != nil {
			t.Fatalf("revoke unknown token (hint %q): %v", hint, err)
		}
	}
	if err := h.Endpoint.Revoke(ctxT(t), "", "refresh_token"); err != nil {
		t.Fatalf("revoke empty token: %v", err)
	}
}

func teWrongSecret(t *testing.T, open OpenTokenEndpoint) {
	h := open(t)
	tok := authorise(t, h)
	code := h.Approve(t, h.Endpoint.AuthCodeURL("porttest-state-"+NewConnectionID(), testVerifier, h.Scopes, nil))
	h.Endpoint.SetClientSecret("wrong-" + h.ClientSecret)
	_, _, err := h.Endpoint.Refresh(ctxT(t), tok.RefreshToken, h.Scopes)
	wantFailure(t, "refresh with a wrong client secret", err, true, "invalid_client", 401)
	_, err = h.Endpoint.Exchange(ctxT(t), code, testVerifier, h.Scopes)
	wantFailure(t, "exchange with a wrong client secret", err, true, "invalid_client", 401)
	if err := h.Endpoint.Revoke(ctxT(t), tok.RefreshToken, "refresh_token"); err == nil {
		t.Fatal("revoke with a wrong client secret succeeded")
	}
	// The failures consumed nothing: with the right secret both work.
	h.Endpoint.SetClientSecret(h.ClientSecret)
	if _, _, err := h.Endpoint.Refresh(ctxT(t), tok.RefreshToken, h.Scopes); err != nil {
		t.Fatalf("refresh with the right secret again: %v", err)
	}
	if _, err := h.Endpoint.Exchange(ctxT(t), code, testVerifier, h.Scopes); err != nil {
		t.Fatalf("exchange with the right secret again: %v", err)
	}
}

func teNoRefreshToken(t *testing.T, open OpenTokenEndpoint) {
	h := open(t)
	_, _, err := h.Endpoint.Refresh(ctxT(t), "", h.Scopes)
	wantFailure(t, "refresh without a refresh token", err, true, "invalid_grant", 0)
}

func teConcurrentRefresh(t *testing.T, open OpenTokenEndpoint) {
	const n = 5
	h := open(t)
	tok := authorise(t, h)
	var (
		mu      sync.Mutex
		winners []domain.Tokens
		losers  int
	)
	together(n, func(int) {
		got, _, err := h.Endpoint.Refresh(ctxT(t), tok.RefreshToken, h.Scopes)
		mu.Lock()
		defer mu.Unlock()
		var f *domain.Failure
		switch {
		case err == nil:
			winners = append(winners, got)
		case errors.As(err, &f) && f.Terminal && f.Code == "invalid_grant":
			losers++
		default:
			t.Errorf("refresh: %v", err)
		}
	})
	if len(winners) != 1 || losers != n-1 {
		t.Fatalf("%d refreshes won and %d lost, want 1 and %d", len(winners), losers, n-1)
	}
	// The losers were reuse: the grant is revoked, the winner's token too.
	_, _, err := h.Endpoint.Refresh(ctxT(t), winners[0].RefreshToken, h.Scopes)
	wantFailure(t, "winner's refresh token after concurrent reuse", err, true, "invalid_grant", 400)
}
