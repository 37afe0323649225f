package roundtrip_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/adapters/roundtrip"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/projections"
)

// A request for a connection whose access token has no refresh token and
// is past its handout window fails at once with ErrActionRequired (the
// user must reconnect, refresh_not_granted), not ErrRetryLater after
// waiting for a refresh that will never come; it does not reach the API.
func TestRoundTripWithoutRefreshTokenNearExpiry(t *testing.T) {
	api := newAPI(t)
	g := projections.NewGate(projections.GateOptions{})
	st := projections.NewStatus()
	st.OnChange(g.Observe)
	id := uuid.NewString()
	c := &domain.Connection{}
	tok := domain.Tokens{AccessToken: "secret-" + uuid.NewString(), Expiry: time.Now().Add(-time.Second)} // no refresh token
	apply(t, st, c, id, domain.ConnectionCreated{Provider: "pleo"})
	apply(t, st, c, id, domain.AuthorisationStarted{AttemptID: "a", ExpiresAt: time.Now().Add(time.Minute)})
	if err := g.SetToken(id, domain.Fingerprint(tok.AccessToken), tok.AccessToken); err != nil {
		t.Fatal(err)
	}
	apply(t, st, c, id, domain.AuthorisationCompleted{AttemptID: "a", Tokens: tok.Info()})

	tr := &roundtrip.Transport{Gate: roundtrip.FromGate(g), ConnectionID: id, Wait: 10 * time.Millisecond}
	_, err := tr.Client().Get(api.URL + "/ok")
	var re *roundtrip.RefusedError
	if !errors.Is(err, roundtrip.ErrActionRequired) || errors.Is(err, roundtrip.ErrRetryLater) || !errors.As(err, &re) ||
		re.ActionBy != domain.ActorUser || re.Gate.Reason != domain.ReasonRefreshNotGranted {
		t.Fatalf("expired token without refresh token: %v; want ErrActionRequired by the user (refresh_not_granted)", err)
	}
	api.mu.Lock()
	n := len(api.auth)
	api.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d requests reached the API", n)
	}
}
