package lifecycle_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/memory"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
)

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines(t *testing.T, msg string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// A provider that cannot be discovered yet (provider_unavailable) is
// waited for: those failures never exhaust the retry bound, however many,
// and their retry times move further apart (backoff). The provider's own
// transient failures still count: MaxAttempts of them in a row make the
// connection unauthenticated (refresh_retries_exhausted), and that
// terminal log line has no retry_at.
func TestProviderUnavailableIsWaitedForNotCounted(t *testing.T) {
	var logs syncBuffer
	e, id, _ := activeEnv(t, withConfig(func(c *lifecycle.Config) {
		c.MaxAttempts = 3
		c.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	}))
	unavailable := &domain.Failure{Code: domain.CodeProviderUnavailable, Detail: "not discovered yet"}
	var lastWait int64
	for i := 1; i <= 6; i++ {
		e.tep.FailNext(memory.RequestRefresh, unavailable)
		if err := e.svc.Refresh(e.ctx, id, domain.TriggerManual); err == nil {
			t.Fatalf("wait %d: refresh succeeded", i)
		}
		c := e.load(id)
		if c.State != domain.StateActive || c.TransientFailures != 0 || c.ProviderWaits != i {
			t.Fatalf("wait %d: %s (%s), transient failures %d, provider waits %d", i, c.State, c.Reason, c.TransientFailures, c.ProviderWaits)
		}
		rf := last[domain.RefreshFailed](e, id)
		if rf.Terminal || rf.Class != "transient" || rf.ErrorCode != domain.CodeProviderUnavailable {
			t.Fatalf("wait %d: refresh.failed %+v", i, rf)
		}
		wait := rf.RetryAt.Sub(e.clock.Now()).Milliseconds()
		if wait < lastWait {
			t.Fatalf("wait %d: retry in %d ms, before the previous wait's %d ms: no backoff", i, wait, lastWait)
		}
		lastWait = wait
	}
	if lastWait < 16_000 {
		t.Fatalf("after 6 waits the retry is %d ms away, want the backoff to have grown (>= 16 s)", lastWait)
	}
	for i := 1; i <= 3; i++ {
		e.tep.FailNext(memory.RequestRefresh, memory.Unavailable(0))
		err := e.svc.Refresh(e.ctx, id, domain.TriggerManual)
		var te *lifecycle.TerminalError
		if terminal := errors.As(err, &te); terminal != (i == 3) {
			t.Fatalf("provider failure %d: %v", i, err)
		}
	}
	c := e.load(id)
	if c.State != domain.StateUnauthenticated || c.Reason != domain.ReasonRefreshRetriesExhausted {
		t.Fatalf("after 3 provider failures: %s (%s)", c.State, c.Reason)
	}
	failed := logs.lines(t, "refresh failed")
	if len(failed) != 9 {
		t.Fatalf("%d refresh failed lines, want 9", len(failed))
	}
	for i, l := range failed {
		_, hasRetry := l["retry_at"]
		if terminal := l["terminal"] == true; terminal == hasRetry {
			t.Errorf("line %d: terminal %v, retry_at %v", i, terminal, l["retry_at"])
		}
		if s, ok := l["retry_at"].(string); ok && strings.HasPrefix(s, "0001-") {
			t.Errorf("line %d: zero retry_at", i)
		}
	}
	if l := failed[8]; l["class"] != "transient" || l["reason"] != string(domain.ReasonRefreshRetriesExhausted) {
		t.Errorf("retries exhausted line %v", l)
	}
}

// lostAnswer is an event store whose first connection.deleted append lands
// but answers an error, as a JetStream publish whose acknowledgement timed
// out.
type lostAnswer struct {
	domain.EventStore
	lose atomic.Bool
}

func (l *lostAnswer) Append(ctx context.Context, id string, version uint64, e domain.Event) (domain.Event, error) {
	got, err := l.EventStore.Append(ctx, id, version, e)
	if _, ok := e.Payload.(domain.ConnectionDeleted); ok && err == nil && l.lose.CompareAndSwap(true, false) {
		return domain.Event{}, errors.New("nats: timeout")
	}
	return got, err
}

// A delete whose connection.deleted landed but whose answer was lost sends
// the same event again, which the store reports as stored: the delete
// succeeds (204), it is not answered 410 by its own retry, and the event is
// stored once.
func TestDeleteWhoseAnswerWasLostSucceeds(t *testing.T) {
	e, id, n := activeEnv(t)
	cfg := e.config()
	lossy := &lostAnswer{EventStore: e.store}
	lossy.lose.Store(true)
	cfg.Store = lossy
	other := e.newInstance(cfg)
	done := make(chan error, 1)
	go func() { done <- other.svc.Delete(e.ctx, id) }()
	if err := e.clock.BlockUntil(e.ctx, 1); err != nil { // the retry's backoff
		t.Fatal(err)
	}
	e.clock.Advance(5 * time.Second)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Delete: %v, want success", err)
		}
	case <-e.ctx.Done():
		t.Fatal("Delete did not end")
	}
	if lossy.lose.Load() {
		t.Fatal("the answer was never lost")
	}
	e.expectTypes(id, n, domain.EventTokensInvalidated, domain.EventConnectionDeleted)
	if err := other.svc.Delete(e.ctx, id); !errors.Is(err, domain.ErrDeleted) {
		t.Fatalf("second delete: %v", err)
	}
}
