package vault

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/domain"
)

// Prefetch answers what Get answers: the token set, ErrNoTokens for a
// connection without one (never written, or purged), ErrInvalidConnectionID
// for an id that is not a key, ErrUndecryptable for a value another key
// sealed.
func TestPrefetchAnswersAsGet(t *testing.T) {
	js := startJetStream(t)
	key := newKey(t)
	v, err := Open(context.Background(), js, Config{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id, gone, never := uuid.NewString(), uuid.NewString(), uuid.NewString()
	want := domain.Tokens{AccessToken: "at", RefreshToken: "rt", TokenType: "bearer", Expiry: time.Now().Add(time.Hour).UTC().Round(0), Scopes: []string{"users:read"}}
	for _, c := range []string{id, gone} {
		if err := v.Put(ctx, c, want); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Delete(ctx, gone); err != nil {
		t.Fatal(err)
	}
	got, err := v.Prefetch(ctx, id)()
	if err != nil || got.RefreshToken != want.RefreshToken || got.AccessToken != want.AccessToken || !got.Expiry.Equal(want.Expiry) || fmt.Sprint(got.Scopes) != fmt.Sprint(want.Scopes) {
		t.Fatalf("prefetch: %+v, %v; want %+v", got, err, want)
	}
	for _, c := range []string{gone, never} {
		if _, err := v.Prefetch(ctx, c)(); !errors.Is(err, domain.ErrNoTokens) {
			t.Fatalf("prefetch of %s without tokens: %v, want ErrNoTokens", c, err)
		}
	}
	for _, bad := range []string{"", "a.b", "a*", "a b"} {
		if _, err := v.Prefetch(ctx, bad)(); !errors.Is(err, ErrInvalidConnectionID) {
			t.Fatalf("prefetch of %q: %v, want ErrInvalidConnectionID", bad, err)
		}
	}
	other, err := Open(context.Background(), js, Config{Key: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Prefetch(ctx, id)(); !errors.Is(err, ErrUndecryptable) {
		t.Fatalf("prefetch with another key: %v, want ErrUndecryptable", err)
	}
}

// Concurrent prefetches of many connections each get their own
// connection's tokens: answers are matched to reads by their reply
// subject, never by arrival.
func TestPrefetchConcurrentReadsGetTheirOwnTokens(t *testing.T) {
	js := startJetStream(t)
	v, err := Open(context.Background(), js, Config{Key: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ids := make([]string, 40)
	for i := range ids {
		ids[i] = uuid.NewString()
		if err := v.Put(ctx, ids[i], domain.Tokens{AccessToken: "at-" + ids[i], RefreshToken: "rt-" + ids[i]}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(ids)*10)
	for round := range 10 {
		for _, id := range ids {
			wg.Go(func() {
				wait := v.Prefetch(ctx, id)
				if round%2 == 0 {
					time.Sleep(time.Millisecond) // the answer is in before the wait
				}
				got, err := wait()
				if err != nil || got.RefreshToken != "rt-"+id || got.AccessToken != "at-"+id {
					errs <- fmt.Errorf("%s: %q, %v", id, got.RefreshToken, err)
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A prefetch whose answer does not come (here: the reply subscription is
// gone) falls back to Get after a try and still returns the tokens; one
// that the server answers with an error status (no responders: the
// bucket's stream does not exist) reads again through Get, which reports
// the bucket missing once the caller's deadline ends.
func TestPrefetchFallsBackToGet(t *testing.T) {
	js := startJetStream(t)
	v, err := Open(context.Background(), js, Config{Key: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := uuid.NewString()
	if err := v.Put(ctx, id, domain.Tokens{AccessToken: "at", RefreshToken: "rt"}); err != nil {
		t.Fatal(err)
	}
	r, err := v.replies()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if got, err := v.Prefetch(ctx, id)(); err != nil || got.RefreshToken != "rt" {
		t.Fatalf("prefetch without its subscription: %q, %v", got.RefreshToken, err)
	}
	count := 0
	r.waiting.Range(func(any, any) bool { count++; return true })
	if count != 0 {
		t.Fatalf("%d reads still waiting after the fallback", count)
	}

	w, err := Open(context.Background(), js, Config{Key: newKey(t), Bucket: "prefetch_gone"})
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(ctx, "prefetch_gone"); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	_, perr := w.Prefetch(short, id)()
	_, gerr := w.Get(short, id)
	if perr == nil || gerr == nil || errors.Is(perr, domain.ErrNoTokens) {
		t.Fatalf("prefetch from a deleted bucket: %v (Get: %v), want an error other than ErrNoTokens", perr, gerr)
	}
}

// Prefetch's answers, token sets sealed or not, come back under the
// connection's own inbox prefix (tokenline's, which readers may not
// subscribe to), never under _INBOX.>, which they may.
func TestPrefetchRepliesUnderTheConnectionsInboxPrefix(t *testing.T) {
	base := startJetStream(t)
	nc, err := nats.Connect(base.Conn().ConnectedUrl(), nats.CustomInboxPrefix("_INBOX_tokenline"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	v, err := Open(context.Background(), js, Config{Key: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	sniffer, err := base.Conn().SubscribeSync("_INBOX.>")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := uuid.NewString()
	if err := v.Put(ctx, id, domain.Tokens{AccessToken: "at", RefreshToken: "rt"}); err != nil {
		t.Fatal(err)
	}
	if err := base.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if got, err := v.Prefetch(ctx, id)(); err != nil || got.RefreshToken != "rt" {
			t.Fatalf("prefetch: %q, %v", got.RefreshToken, err)
		}
	}
	if !strings.HasPrefix(v.reply.prefix, "_INBOX_tokenline.") {
		t.Fatalf("replies under %q", v.reply.prefix)
	}
	if err := base.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	if m, err := sniffer.NextMsg(100 * time.Millisecond); err == nil {
		t.Fatalf("a subscriber to _INBOX.> saw %s", m.Subject)
	}
}
