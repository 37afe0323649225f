package projections

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/domain"
)

func TestStateAtMatchesRecordedStates(t *testing.T) {
	srv := natstest.Start(t, "")
	st := openStore(t, srv, "instance/a")
	d := newDriver(t, st)
	rng := rand.New(rand.NewPCG(11, 12))
	type rec struct {
		id string
		at time.Time
		c  domain.Connection
	}
	var recs []rec
	ids := []string{d.create(), d.create(), d.create(), d.create()}
	created := d.now
	for _, id := range ids {
		c, _ := st.Load(ctxT(t), id)
		recs = append(recs, rec{id, c.Created, c})
	}
	for range 120 {
		id := ids[rng.IntN(len(ids))]
		d.step(rng, id)
		c, err := st.Load(ctxT(t), id)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec{id, d.now, c}) // d.now is the event's time
	}
	for _, r := range recs {
		for _, at := range []time.Time{r.at, r.at.Add(500 * time.Millisecond)} {
			got, evs, err := StateAt(ctxT(t), st, r.id, at)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, r.c) {
				t.Fatalf("StateAt(%s, %s):\n got %+v\nwant %+v", r.id, at, got, r.c)
			}
			if len(evs) != r.c.Events || evs[len(evs)-1].Seq != r.c.Version {
				t.Fatalf("StateAt returned %d events up to seq %d; state has %d events at version %d", len(evs), evs[len(evs)-1].Seq, r.c.Events, r.c.Version)
			}
		}
	}
	if _, _, err := StateAt(ctxT(t), st, ids[3], created.Add(-time.Hour)); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("before creation: %v", err)
	}
}

func TestTimeline(t *testing.T) {
	srv := natstest.Start(t, "")
	st := openStore(t, srv, "instance/a")
	d := newDriver(t, st)
	var ids []string
	for range 30 {
		id := d.create()
		d.activate(id)
		ids = append(ids, id)
	}
	from := d.now.Add(time.Second)
	fail := func(id, code string) {
		d.must(id, domain.StartRefresh{LeaseUntil: d.now.Add(time.Minute)})
		d.must(id, domain.FailRefresh{Terminal: true, ErrorCode: code, HTTPStatus: 401})
	}
	for _, id := range ids[:12] {
		fail(id, "invalid_client")
	}
	for _, id := range ids[12:17] {
		fail(id, "invalid_grant")
	}
	// one connection fails twice with invalid_grant (reauthorised between)
	d.activate(ids[12])
	fail(ids[12], "invalid_grant")
	for _, id := range ids[17:20] {
		d.must(id, domain.Update{Config: map[string]string{"x": "1"}})
	}
	to := d.now.Add(time.Second)
	for _, id := range ids[20:] { // after the window
		fail(id, "invalid_client")
	}

	rep, err := Timeline(ctxT(t), st, from, to)
	if err != nil {
		t.Fatal(err)
	}
	wantCounts := []TransitionCount{
		{To: domain.StateRefreshing, Connections: 17, Transitions: 18},
		{To: domain.StateUnauthenticated, Reason: domain.ReasonInvalidClient, Connections: 12, Transitions: 12},
		{To: domain.StateUnauthenticated, Reason: domain.ReasonInvalidGrant, Connections: 5, Transitions: 6},
		{To: domain.StateActive, Connections: 1, Transitions: 1},
		{To: domain.StateReauthorising, Reason: domain.ReasonInvalidGrant, Connections: 1, Transitions: 1},
	}
	if !reflect.DeepEqual(rep.Counts, wantCounts) {
		t.Fatalf("counts:\n got %+v\nwant %+v", rep.Counts, wantCounts)
	}
	if n := 12*2 + 5*2 + 2 + 2 + 3; len(rep.Transitions) != n {
		t.Fatalf("%d transitions in the window, want %d", len(rep.Transitions), n)
	}
	for i, tr := range rep.Transitions {
		if tr.Time.Before(from) || !tr.Time.Before(to) || (i > 0 && tr.Seq <= rep.Transitions[i-1].Seq) {
			t.Fatalf("transition %d out of window or order: %+v", i, tr)
		}
		if tr.Type == domain.EventRefreshFailed && (tr.From != domain.StateRefreshing || tr.To != domain.StateUnauthenticated || tr.ErrorCode != string(tr.Reason)) {
			t.Fatalf("refresh.failed transition %+v", tr)
		}
		if tr.Type == domain.EventConnectionUpdated && (tr.From != domain.StateActive || tr.Changed()) {
			t.Fatalf("update transition %+v", tr)
		}
	}
	var buf bytes.Buffer
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"12 connections went unauthenticated with invalid_client",
		"5 connections went unauthenticated with invalid_grant (6 times)",
		"refreshing → unauthenticated (invalid_client)",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("timeline text lacks %q:\n%s", want, out)
		}
	}
	if rep.Events != len(rep.Transitions) || rep.Truncated {
		t.Fatalf("events %d, truncated %v for %d transitions", rep.Events, rep.Truncated, len(rep.Transitions))
	}
	// A limit shortens the list, not the counts.
	lim, err := Timeline(ctxT(t), st, from, to, WithLimit(5))
	if err != nil || !lim.Truncated || lim.Events != rep.Events || !reflect.DeepEqual(lim.Transitions, rep.Transitions[:5]) || !reflect.DeepEqual(lim.Counts, rep.Counts) {
		t.Fatalf("with limit: %v %+v", err, lim)
	}
	buf.Reset()
	if err := lim.WriteText(&buf); err != nil || !strings.Contains(buf.String(), fmt.Sprintf(": %d events, %d state changes, the first 5 listed\n", rep.Events, rep.changes())) {
		t.Fatalf("limited timeline text (%v):\n%s", err, buf.String())
	}
	// Bounded by stored time: the events are back-dated three days, so a
	// slack that reaches the time they were stored keeps them all, and an
	// hour's slack stops before the first of them.
	rep2, err := Timeline(ctxT(t), st, from, to, WithStoredSlack(time.Since(to)+time.Hour))
	if err != nil || !reflect.DeepEqual(rep2.Counts, rep.Counts) {
		t.Fatalf("with slack: %v %+v", err, rep2.Counts)
	}
	rep3, err := Timeline(ctxT(t), st, from, to, WithStoredSlack(time.Hour))
	if err != nil || rep3.Events != 0 {
		t.Fatalf("with an hour's slack: %v, %d events", err, rep3.Events)
	}
}

// auditEvents collects what AuditEvents delivers.
func auditEvents(t *testing.T, src Source, q AuditQuery) []domain.Event {
	t.Helper()
	var out []domain.Event
	if err := AuditEvents(ctxT(t), src, q, func(e domain.Event, stored time.Time) error {
		if stored.IsZero() {
			t.Errorf("seq %d without a storage time", e.Seq)
		}
		out = append(out, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAuditEvents(t *testing.T) {
	srv := natstest.Start(t, "")
	st := openStore(t, srv, "instance/a")
	d := newDriver(t, st)
	a, b := d.create(), d.create()
	d.activate(a)
	d.activate(b)
	mid := d.now.Add(time.Second)
	d.must(a, domain.StartRefresh{LeaseUntil: d.now.Add(time.Minute)})
	d.must(a, domain.FailRefresh{Terminal: true, ErrorCode: "invalid_grant", HTTPStatus: 400})
	d.must(b, domain.RejectAccess{HTTPStatus: 403, ErrorCode: "insufficient_scope", Scope: "admin:write"})
	d.must(a, domain.InvalidateTokens{})

	all := auditEvents(t, st, AuditQuery{ConnectionID: a})
	var types []domain.EventType
	for i, e := range all {
		if e.ConnectionID != a || (i > 0 && e.Seq <= all[i-1].Seq) || e.Actor != "instance/a" {
			t.Fatalf("event %d: %+v", i, e)
		}
		types = append(types, e.Type())
	}
	want := []domain.EventType{domain.EventConnectionCreated, domain.EventAuthorisationStarted, domain.EventAuthorisationCompleted,
		domain.EventRefreshStarted, domain.EventRefreshFailed, domain.EventTokensInvalidated}
	if !reflect.DeepEqual(types, want) {
		t.Fatalf("types %v", types)
	}
	if failed := all[4]; !failed.Time.Equal(mid.Add(time.Second)) {
		t.Fatalf("refresh.failed %+v", failed)
	}
	win := auditEvents(t, st, AuditQuery{Since: mid, Until: mid.Add(3 * time.Second)})
	if len(win) != 3 || win[2].ConnectionID != b || win[2].Type() != domain.EventAccessRejected {
		t.Fatalf("window: %+v", win)
	}
	only := auditEvents(t, st, AuditQuery{Types: []domain.EventType{domain.EventAccessRejected, domain.EventRefreshFailed}})
	if len(only) != 2 {
		t.Fatalf("types filter: %+v", only)
	}
	if none := auditEvents(t, st, AuditQuery{ConnectionID: uuid.NewString()}); len(none) != 0 {
		t.Fatalf("unknown connection: %+v", none)
	}

	// Events stamped as they are stored: a window bounded by storage time
	// (StoredSlack) finds the same events as a full scan.
	d.now = time.Now()
	since := d.now
	c := d.create()
	d.activate(c)
	until := d.now.Add(time.Second)
	d.now = d.now.Add(time.Minute)
	d.must(c, domain.Update{Config: map[string]string{"late": "1"}}) // after the window
	full := auditEvents(t, st, AuditQuery{Since: since, Until: until})
	if len(full) != 3 {
		t.Fatalf("full scan: %d", len(full))
	}
	bounded := auditEvents(t, st, AuditQuery{Since: since, Until: until, StoredSlack: 5 * time.Second})
	if !reflect.DeepEqual(bounded, full) {
		t.Fatalf("bounded scan:\n%+v\n%+v", bounded, full)
	}
	if bounded[0].Seq <= all[len(all)-1].Seq {
		t.Fatal("unexpected order")
	}
	// No read leaves a consumer behind.
	info, err := st.Stream().Info(ctxT(t))
	if err != nil || info.State.Consumers != 0 {
		t.Fatalf("%d consumers left behind (%v)", info.State.Consumers, err)
	}
}
