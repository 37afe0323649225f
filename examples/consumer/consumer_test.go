package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/domain"
)

// appender writes events for connections through the real event store.
type appender struct {
	t     *testing.T
	store *jsstore.Store
	t0    time.Time
	n     int
}

func (a *appender) add(id string, p domain.Payload) {
	a.t.Helper()
	ctx := context.Background()
	c, err := a.store.Load(ctx, id)
	if err != nil && !errors.Is(err, domain.ErrNotFound) {
		a.t.Fatal(err)
	}
	a.n++
	e := domain.Event{ID: uuid.NewString(), ConnectionID: id, Time: a.t0.Add(time.Duration(a.n) * time.Second), Actor: "instance/test", Payload: p}
	if _, err := a.store.Append(ctx, id, c.Version, e); err != nil {
		a.t.Fatalf("append %s: %v", p.EventType(), err)
	}
}

// seqs parses the seq= field of every printed line.
func seqs(t *testing.T, out string) []uint64 {
	t.Helper()
	var s []uint64
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		for f := range strings.FieldsSeq(sc.Text()) {
			if v, ok := strings.CutPrefix(f, "seq="); ok {
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					t.Fatalf("line %q", sc.Text())
				}
				s = append(s, n)
			}
		}
	}
	return s
}

func TestDurableConsumerResumesExactlyOnceInOrder(t *testing.T) {
	srv := natstest.Start(t, "")
	nc := srv.Connect(t)
	ctx := context.Background()
	store, err := jsstore.Open(ctx, nc, jsstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	a := &appender{t: t, store: store, t0: time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)}
	conn1, conn2 := uuid.NewString(), uuid.NewString()
	tok := domain.Tokens{AccessToken: "at-secret", RefreshToken: "rt-secret", Expiry: a.t0.Add(15 * time.Minute), Scopes: []string{"users:read"}}

	// Before the consumer ever ran: it must see these (DeliverAll).
	a.add(conn1, domain.ConnectionCreated{Provider: "sandbox", Scopes: []string{"users:read"}})
	a.add(conn1, domain.AuthorisationStarted{AttemptID: "att-1", Scopes: []string{"users:read"}, ExpiresAt: a.t0.Add(10 * time.Minute)})
	a.add(conn1, domain.AuthorisationCompleted{AttemptID: "att-1", Tokens: tok.Info()})
	a.add(conn2, domain.ConnectionCreated{Provider: "sandbox"})
	a.add(conn1, domain.RefreshStarted{Attempt: 1, LeaseUntil: a.t0.Add(time.Hour), Trigger: domain.TriggerSchedule})

	const durable = "example-test"
	var first bytes.Buffer
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := Run(rctx, nc, Stream, durable, &first, 3); err != nil {
		t.Fatal(err)
	}

	// While the consumer is offline, more happens.
	a.add(conn1, domain.RefreshFailed{Terminal: true, Class: "terminal", ErrorCode: "invalid_grant", HTTPStatus: 400, Attempt: 1, Reason: domain.ReasonInvalidGrant})
	a.add(conn1, domain.TokensInvalidated{ProviderRevoked: true})
	a.add(conn2, domain.ConnectionUpdated{Config: map[string]string{"company": "acme"}})
	a.add(conn2, domain.ConnectionDeleted{})
	total := a.n

	// Restart on a new connection, as a restarted process would.
	nc.Close()
	nc2 := srv.Connect(t)
	var second bytes.Buffer
	if err := Run(rctx, nc2, Stream, durable, &second, total-3); err != nil {
		t.Fatal(err)
	}
	// Nothing is left: a third run sees no event until its context ends.
	var third bytes.Buffer
	idle, cancelIdle := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancelIdle()
	if err := Run(idle, nc2, Stream, durable, &third, 0); err != nil {
		t.Fatal(err)
	}
	if third.Len() != 0 {
		t.Fatalf("events delivered twice:\n%s", third.String())
	}

	got := append(seqs(t, first.String()), seqs(t, second.String())...)
	if len(got) != total {
		t.Fatalf("received %d events, want %d:\n%s---\n%s", len(got), total, first.String(), second.String())
	}
	for i, s := range got {
		if s != uint64(i+1) {
			t.Fatalf("event %d has seq %d: not every event exactly once in order: %v", i, s, got)
		}
	}

	all := first.String() + second.String()
	for _, want := range []string{
		"2026-11-28T10:00:01Z seq=1 " + conn1 + " connection.created provider=sandbox scopes=users:read reason=never_authorised -> unauthenticated",
		" authorisation.completed access_token_fp=" + domain.Fingerprint("at-secret") + " expires_at=2026-11-28T10:15:00Z -> active",
		" refresh.failed terminal error=invalid_grant http_status=400 attempt=1 reason=invalid_grant -> unauthenticated",
		" tokens.invalidated provider_revoked=true\n",
		conn2 + " connection.updated config_keys=1\n",
		conn2 + " connection.deleted reason=connection_deleted -> unauthenticated\n",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("output lacks %q:\n%s", want, all)
		}
	}
	for _, secret := range []string{"at-secret\n", "rt-secret", " at-secret"} {
		if strings.Contains(all, secret) {
			t.Errorf("output contains a token")
		}
	}

	// The durable consumer is on the server with the documented settings.
	js, err := jetstream.New(nc2)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(ctx, jsstore.DefaultStream, durable)
	if err != nil {
		t.Fatal(err)
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ci.Config.FilterSubject != "tokenline.conn.>" || ci.Config.AckPolicy != jetstream.AckExplicitPolicy || ci.Config.DeliverPolicy != jetstream.DeliverAllPolicy ||
		ci.NumAckPending != 0 || ci.Delivered.Stream != uint64(total) {
		t.Fatalf("consumer %s: %+v", durable, fmt.Sprint(ci.Config, " pending ", ci.NumAckPending, " delivered ", ci.Delivered.Stream))
	}
}

func TestRunWithoutStream(t *testing.T) {
	srv := natstest.Start(t, "")
	nc := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Run(ctx, nc, Stream, "x", &bytes.Buffer{}, 1); err == nil {
		t.Fatal("Run without a TOKENLINE stream succeeded")
	}
}
