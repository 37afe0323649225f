package roundtrip_test

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/adapters/roundtrip"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/projections"
)

// followed is openGate's connection with a status projection to apply
// further events to.
func followed(t *testing.T) (*projections.Gate, *projections.Status, *domain.Connection, string) {
	t.Helper()
	g := projections.NewGate(projections.GateOptions{})
	st := projections.NewStatus()
	st.OnChange(g.Observe)
	id := uuid.NewString()
	c := &domain.Connection{}
	tok := domain.Tokens{AccessToken: "secret-" + uuid.NewString(), RefreshToken: "r", Expiry: time.Now().Add(time.Hour)}
	apply(t, st, c, id, domain.ConnectionCreated{Provider: "pleo"})
	apply(t, st, c, id, domain.AuthorisationStarted{AttemptID: "a", ExpiresAt: time.Now().Add(time.Minute)})
	if err := g.SetToken(id, domain.Fingerprint(tok.AccessToken), tok.AccessToken); err != nil {
		t.Fatal(err)
	}
	apply(t, st, c, id, domain.AuthorisationCompleted{AttemptID: "a", Tokens: tok.Info()})
	return g, st, c, id
}

func apply(t *testing.T, st *projections.Status, c *domain.Connection, id string, p domain.Payload) {
	t.Helper()
	e := domain.Event{ID: uuid.NewString(), ConnectionID: id, Time: time.Now(), Seq: c.Version + 1, Payload: p}
	if err := c.Apply(e); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Apply(e); err != nil {
		t.Fatal(err)
	}
}

// A request made while a refresh is in flight waits for it and goes out
// with the fresh token; one whose refresh does not land within Wait fails
// with ErrRetryLater; one a person must act on fails at once with
// ErrActionRequired naming who.
func TestRoundTripWaitsForRefresh(t *testing.T) {
	api := newAPI(t)
	g, st, c, id := followed(t)
	tr := &roundtrip.Transport{Gate: roundtrip.FromGate(g), ConnectionID: id, Wait: time.Minute}

	apply(t, st, c, id, domain.RefreshStarted{LeaseUntil: time.Now().Add(time.Minute), Trigger: domain.TriggerSchedule})
	fresh := domain.Tokens{AccessToken: "secret-" + uuid.NewString(), RefreshToken: "r2", Expiry: time.Now().Add(time.Hour)}
	done := make(chan error, 1)
	go func() {
		resp, err := tr.Client().Get(api.URL + "/ok")
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	// The refresh lands while the request waits (or before it asks: either
	// way it must go out with the fresh token).
	if err := g.SetToken(id, domain.Fingerprint(fresh.AccessToken), fresh.AccessToken); err != nil {
		t.Fatal(err)
	}
	apply(t, st, c, id, domain.RefreshSucceeded{Tokens: fresh.Info(), Rotated: true})
	if err := <-done; err != nil {
		t.Fatalf("request during a refresh: %v", err)
	}
	api.mu.Lock()
	got := api.auth[len(api.auth)-1]
	api.mu.Unlock()
	if got != "Bearer "+fresh.AccessToken {
		t.Fatal("the request did not carry the fresh token")
	}

	apply(t, st, c, id, domain.RefreshStarted{LeaseUntil: time.Now().Add(time.Minute), Trigger: domain.TriggerSchedule})
	short := tr.ForConnection(id)
	short.Wait = 10 * time.Millisecond
	_, err := short.Client().Get(api.URL + "/ok")
	var re *roundtrip.RefusedError
	if !errors.Is(err, roundtrip.ErrRetryLater) || errors.Is(err, roundtrip.ErrActionRequired) || !errors.As(err, &re) || !re.RetryLater ||
		!errors.Is(err, domain.ErrUnauthenticated) {
		t.Fatalf("refresh that does not land: %v; want ErrRetryLater", err)
	}

	apply(t, st, c, id, domain.RefreshFailed{Terminal: true, Class: "terminal", Attempt: 1, ErrorCode: "invalid_client", HTTPStatus: http.StatusUnauthorized, Reason: domain.ReasonInvalidClient})
	_, err = tr.Client().Get(api.URL + "/ok") // Wait is a minute: it must not wait
	if !errors.Is(err, roundtrip.ErrActionRequired) || !errors.As(err, &re) || re.ActionBy != domain.ActorOperator || re.RetryLater {
		t.Fatalf("invalid_client: %v; want ErrActionRequired by the operator", err)
	}
}
