package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func openStore(t testing.TB, srv *natstest.Server, actor string) *jsstore.Store {
	t.Helper()
	st, err := jsstore.Open(ctxT(t), srv.Connect(t), jsstore.Config{Actor: actor})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// t0 is the start of scripted histories: three days before the test run,
// so that event times and the stream's storage times are apart (as in a
// replay of an old incident) and no test depends on the calendar.
var t0 = time.Now().UTC().Add(-72 * time.Hour).Truncate(time.Second)

// testClock is the gate's clock in tests that script histories from t0:
// every token they issue (valid for an hour) is still valid then.
func testClock() time.Time { return t0.Add(time.Minute) }

// accessToken is the secret of token generation n of a connection.
func accessToken(id string, n int) string { return fmt.Sprintf("at-%s-%d", id, n) }

func tokens(id string, n int, issued time.Time) domain.Tokens {
	return domain.Tokens{
		AccessToken:  accessToken(id, n),
		RefreshToken: fmt.Sprintf("rt-%s-%d", id, n),
		Expiry:       issued.Add(time.Hour),
		Scopes:       []string{"expenses:read", "users:read"},
	}
}

// driver runs commands against a store the way the lifecycle service does:
// load, decide, append. Each event is stamped one second after the last.
type driver struct {
	t   testing.TB
	st  *jsstore.Store
	now time.Time
	gen map[string]int
}

func newDriver(t testing.TB, st *jsstore.Store) *driver {
	return &driver{t: t, st: st, now: t0, gen: map[string]int{}}
}

func (d *driver) exec(id string, cmd domain.Command) (domain.Event, error) {
	d.t.Helper()
	ctx := ctxT(d.t)
	c, err := d.st.Load(ctx, id)
	if err != nil && !errors.Is(err, domain.ErrNotFound) {
		d.t.Fatal(err)
	}
	p, err := domain.Decide(&c, cmd)
	if err != nil {
		return domain.Event{}, err
	}
	d.now = d.now.Add(time.Second)
	out, err := d.st.Append(ctx, id, c.Version, domain.Event{Time: d.now, Payload: p})
	if err != nil {
		d.t.Fatalf("append %T: %v", cmd, err)
	}
	return out, nil
}

func (d *driver) must(id string, cmd domain.Command) domain.Event {
	d.t.Helper()
	e, err := d.exec(id, cmd)
	if err != nil {
		d.t.Fatalf("decide %T: %v", cmd, err)
	}
	return e
}

func (d *driver) create() string {
	id := uuid.NewString()
	d.must(id, domain.Create{Provider: "pleo", Scopes: []string{"expenses:read", "users:read"}, Config: map[string]string{"team": "finance"}})
	return id
}

// activate authorises a connection; it returns the access token issued.
func (d *driver) activate(id string) string {
	d.gen[id]++
	d.must(id, domain.StartAuthorisation{AttemptID: fmt.Sprintf("att-%d", d.gen[id]), ExpiresAt: d.now.Add(10 * time.Minute)})
	tok := tokens(id, d.gen[id], d.now)
	d.must(id, domain.CompleteAuthorisation{AttemptID: fmt.Sprintf("att-%d", d.gen[id]), Tokens: tok.Info()})
	return tok.AccessToken
}

// step performs one random command that the connection's state allows.
func (d *driver) step(rng *rand.Rand, id string) {
	d.t.Helper()
	c, err := d.st.Load(ctxT(d.t), id)
	if err != nil {
		d.t.Fatal(err)
	}
	if c.Deleted {
		return
	}
	r := rng.IntN(100)
	var cmd domain.Command
	switch c.State {
	case domain.StateUnauthenticated:
		switch {
		case r < 3:
			cmd = domain.Delete{}
		case r < 15 && c.TokensHeld:
			cmd = domain.InvalidateTokens{ProviderRevoked: r%2 == 0}
		case r < 25:
			cmd = domain.Update{Config: map[string]string{"team": fmt.Sprint("t", r)}}
		default:
			d.gen[id]++
			cmd = domain.StartAuthorisation{AttemptID: fmt.Sprintf("att-%d", d.gen[id]), ExpiresAt: d.now.Add(10 * time.Minute)}
		}
	case domain.StateReauthorising:
		switch {
		case r < 70:
			cmd = domain.CompleteAuthorisation{AttemptID: c.AttemptID, Tokens: tokens(id, d.gen[id], d.now).Info()}
		case r < 85:
			cmd = domain.FailAuthorisation{AttemptID: c.AttemptID, ErrorCode: "access_denied"}
		default:
			cmd = domain.FailAuthorisation{AttemptID: c.AttemptID, Expired: true}
		}
	case domain.StateActive:
		switch {
		case r < 60:
			cmd = domain.StartRefresh{LeaseUntil: d.now.Add(30 * time.Second), RefreshTokenFP: c.Tokens.RefreshTokenFP}
		case r < 70:
			cmd = domain.StartRefresh{LeaseUntil: d.now.Add(30 * time.Second), Trigger: domain.TriggerAccessRejected}
		case r < 80:
			cmd = domain.RejectAccess{HTTPStatus: 401, ErrorCode: "invalid_token", AccessTokenFP: c.Tokens.AccessTokenFP}
		case r < 88:
			cmd = domain.RejectAccess{HTTPStatus: 403, ErrorCode: "insufficient_scope", Scope: "admin:write"}
		case r < 92:
			cmd = domain.Delete{}
		default:
			cmd = domain.Update{Scopes: []string{"expenses:read"}}
		}
	case domain.StateRefreshing:
		switch {
		case r < 55:
			d.gen[id]++
			tok := tokens(id, d.gen[id], d.now)
			cmd = domain.SucceedRefresh{Tokens: tok.Info(), Rotated: r%2 == 0}
		case r < 80:
			cmd = domain.FailRefresh{ErrorCode: "temporarily_unavailable", HTTPStatus: 503, RetryAt: d.now.Add(time.Minute), MaxAttempts: 3}
		default:
			code := []string{"invalid_grant", "invalid_client", "unauthorized_client", "weird_error"}[r%4]
			cmd = domain.FailRefresh{Terminal: true, ErrorCode: code, HTTPStatus: 400}
		}
	}
	d.must(id, cmd)
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// Build reads the whole stream into a fresh Status (no observer, nothing
// kept between runs), as a Runner without a snapshot catches up: the
// tests compare it with live projections. It returns the projection, the position it is at,
// and how many records it passed over (logged, never their payload).
func Build(ctx context.Context, src Source) (*Status, uint64, int64, error) {
	return build(ctx, src, slog.Default())
}

func build(ctx context.Context, src Source, log *slog.Logger) (*Status, uint64, int64, error) {
	st := NewStatus()
	var skipped int64
	pos, err := src.Read(ctx, events.Range{}, func(rec *events.Record) error {
		if rec.Err != nil {
			if id, ok := connectionOfSubject(rec.Subject); ok {
				st.skipLocked(id, rec.Seq)
			}
			skipped++
			log.Warn("rebuild skipped a record", "seq", rec.Seq, "subject", rec.Subject, "error", rec.Err.Error())
			return nil
		}
		if err := st.applyLocked(rec.Event); err != nil {
			skipped++
			log.Warn("rebuild skipped a record", "seq", rec.Seq, "subject", rec.Subject, "type", string(rec.Event.Type()), "error", err.Error())
		}
		return nil
	})
	if err != nil {
		return nil, 0, skipped, err
	}
	return st, pos, skipped, nil
}

// entriesOf returns conns as the status projection holds them: each
// aggregate without its Config, the config packed beside it.
func entriesOf(conns []*domain.Connection) []*statusEntry {
	var sv sharedValues
	out := make([]*statusEntry, len(conns))
	for i, c := range conns {
		out[i] = &statusEntry{c: *c, cfg: sv.config(c.Config)}
		out[i].c.Config = nil
	}
	return out
}
