package webhook_test

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/webhook"
	"github.com/tokenline/tokenline/domain"
)

// A receiver's answer headers are bounded like its body: one answering
// with a megabyte of headers gets a failed attempt (and, after the bound,
// a dead letter), not a delivery that made tokenline hold it all (10 MiB
// per request in flight by net/http's default, times the workers).
func TestHugeAnswerHeadersFailTheAttempt(t *testing.T) {
	var answered atomic.Int64
	big := strings.Repeat("x", 1<<20)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		answered.Add(1)
		w.Header().Set("X-Padding", big)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer recv.Close()
	e := newEnv(t)
	m := e.open(t, func(c *webhook.Config) { c.MaxAttempts = 1 })
	hk, _, err := m.Create(context.Background(), webhook.CreateRequest{URL: recv.URL + "/hook"})
	if err != nil {
		t.Fatal(err)
	}
	e.publish(t, conns(1)[0], 0, 1)
	var log []webhook.Attempt
	for i := 0; i < 1000; i++ {
		if log, err = m.Log(context.Background(), hk.ID); err != nil {
			t.Fatal(err)
		}
		if len(log) > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(log) == 0 {
		t.Fatalf("no attempt logged (the receiver answered %d times)", answered.Load())
	}
	a := log[0]
	if a.Outcome == "delivered" || a.Status != 0 || !strings.Contains(a.Error, "header") {
		t.Fatalf("an answer with 1 MiB of headers was taken: %+v", a)
	}
	if len(a.Error) > 200 {
		t.Fatalf("the attempt's error is %d bytes", len(a.Error))
	}
}

// The subscriptions are bounded (Config.MaxSubscriptions): one more is
// refused as an invalid request and creates nothing; a deleted one frees
// its place.
func TestSubscriptionsBounded(t *testing.T) {
	e := newEnv(t)
	m := e.open(t, func(c *webhook.Config) { c.MaxSubscriptions = 3 })
	ctx := context.Background()
	var first string
	for i := 0; i < 3; i++ {
		w, _, err := m.Create(ctx, webhook.CreateRequest{URL: "http://127.0.0.1:9/hook"})
		if err != nil {
			t.Fatal(err)
		}
		first = cmp.Or(first, w.ID)
	}
	_, _, err := m.Create(ctx, webhook.CreateRequest{URL: "http://127.0.0.1:9/hook"})
	if !errors.Is(err, domain.ErrInvalidCommand) || !strings.Contains(err.Error(), "at most 3") {
		t.Fatalf("a fourth subscription: %v", err)
	}
	if n := len(m.List()); n != 3 {
		t.Fatalf("%d subscriptions after the refusal", n)
	}
	if _, err := m.Delete(ctx, first, "test"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Create(ctx, webhook.CreateRequest{URL: "http://127.0.0.1:9/hook"}); err != nil {
		t.Fatalf("after a delete: %v", err)
	}
}
