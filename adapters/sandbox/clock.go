package sandbox

import (
	"context"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
)

// clockStrategy is fosite's HMAC token strategy with the expiry of access
// and refresh tokens checked against the sandbox's clock (Config.Now).
// fosite's strategy compares expiry times with time.Now() and has no clock
// hook, so the expiry check is made here and the wrapped strategy is handed
// a view of the request without expiry times: it then checks only the
// token's HMAC. Authorisation codes are handled the same way.
type clockStrategy struct {
	*oauth2.HMACSHAStrategy
	now func() time.Time
}

// ValidateAuthorizeCode implements oauth2.AuthorizeCodeStrategy: the code's
// expiry (set by the store from the sandbox clock) is checked against the
// sandbox clock.
func (c *clockStrategy) ValidateAuthorizeCode(ctx context.Context, r fosite.Requester, token string) error {
	if exp := r.GetSession().GetExpiresAt(fosite.AuthorizeCode); !exp.IsZero() && exp.Before(c.now()) {
		return fosite.ErrTokenExpired.WithHintf("Authorize code expired at '%s'.", exp)
	}
	return c.HMACSHAStrategy.ValidateAuthorizeCode(ctx, noExpiry{r}, token)
}

// ValidateAccessToken implements oauth2.AccessTokenStrategy.
func (c *clockStrategy) ValidateAccessToken(ctx context.Context, r fosite.Requester, token string) error {
	exp := r.GetSession().GetExpiresAt(fosite.AccessToken)
	if exp.IsZero() {
		return c.HMACSHAStrategy.ValidateAccessToken(ctx, r, token) // fosite's own rule
	}
	if exp.Before(c.now()) {
		return fosite.ErrTokenExpired.WithHintf("Access token expired at '%s'.", exp)
	}
	return c.HMACSHAStrategy.ValidateAccessToken(ctx, noExpiry{r}, token)
}

// ValidateRefreshToken implements oauth2.RefreshTokenStrategy.
func (c *clockStrategy) ValidateRefreshToken(ctx context.Context, r fosite.Requester, token string) error {
	if exp := r.GetSession().GetExpiresAt(fosite.RefreshToken); !exp.IsZero() && exp.Before(c.now()) {
		return fosite.ErrTokenExpired.WithHintf("Refresh token expired at '%s'.", exp)
	}
	return c.HMACSHAStrategy.ValidateRefreshToken(ctx, noExpiry{r}, token)
}

// noExpiry is a read-only view of a request whose session has no expiry
// times and which was requested in the distant future, so that fosite's
// wall-clock expiry rules never fire.
type noExpiry struct{ fosite.Requester }

// farFuture is later than any wall clock the sandbox will meet.
var farFuture = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// GetSession returns the session without expiry times.
func (n noExpiry) GetSession() fosite.Session { return noExpirySession{n.Requester.GetSession()} }

// GetRequestedAt returns farFuture.
func (n noExpiry) GetRequestedAt() time.Time { return farFuture }

// noExpirySession hides a session's expiry times.
type noExpirySession struct{ fosite.Session }

// GetExpiresAt returns the zero time (no expiry) for every token type.
func (noExpirySession) GetExpiresAt(fosite.TokenType) time.Time { return time.Time{} }
