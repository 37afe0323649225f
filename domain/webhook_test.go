package domain_test

import (
	"errors"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// The subscription FSM: what each state allows, and what the fold keeps.
func TestWebhookTransitions(t *testing.T) {
	var w domain.Webhook
	if err := domain.DecideWebhook(w, domain.WebhookPausedEvt); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("pause before create: %v", err)
	}
	now := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	w.Apply(domain.WebhookEvent{Type: domain.WebhookCreated, WebhookID: "wh_1", URL: "https://x", StartSeq: 7,
		EventTypes: []domain.EventType{domain.EventRefreshFailed}, SecretFingerprint: "sha256:a", Time: now, Seq: 1})
	if w.State != domain.WebhookActive || w.StartSeq != 7 || w.Version != 1 {
		t.Fatalf("created: %+v", w)
	}
	steps := []struct {
		t     domain.WebhookEventType
		ok    bool
		state domain.WebhookState
	}{
		{domain.WebhookResumed, false, domain.WebhookActive},
		{domain.WebhookPausedEvt, true, domain.WebhookPaused},
		{domain.WebhookPausedEvt, false, domain.WebhookPaused},
		{domain.WebhookDisabledEvt, false, domain.WebhookPaused},
		{domain.WebhookResumed, true, domain.WebhookActive},
		{domain.WebhookDisabledEvt, true, domain.WebhookDisabled},
		{domain.WebhookSecretRotated, true, domain.WebhookDisabled},
		{domain.WebhookResumed, true, domain.WebhookActive},
		{domain.WebhookDeletedEvt, true, domain.WebhookDeleted},
	}
	for i, s := range steps {
		err := domain.DecideWebhook(w, s.t)
		if (err == nil) != s.ok {
			t.Fatalf("step %d %s in %s: %v", i, s.t, w.State, err)
		}
		if err == nil {
			w.Apply(domain.WebhookEvent{Type: s.t, Reason: "gone", SecretFingerprint: "sha256:b", Seq: uint64(i + 2)})
		}
		if w.State != s.state {
			t.Fatalf("step %d: %s, want %s", i, w.State, s.state)
		}
	}
	if w.SecretFingerprint != "sha256:b" {
		t.Fatal("rotation not folded")
	}
	for _, et := range domain.WebhookEventTypes {
		if et != domain.WebhookCreated && !errors.Is(domain.DecideWebhook(w, et), domain.ErrDeleted) {
			t.Errorf("%s after delete accepted", et)
		}
	}
}

func TestWebhookFilter(t *testing.T) {
	if _, err := domain.ParseEventTypeFilter([]string{"refresh.failed", "tokenline.tokens.invalidated"}); err != nil {
		t.Fatal(err)
	}
	if _, err := domain.ParseEventTypeFilter([]string{"refresh.*"}); !errors.Is(err, domain.ErrInvalidCommand) {
		t.Fatalf("a wildcard: %v", err)
	}
	w := domain.Webhook{EventTypes: []domain.EventType{domain.EventRefreshFailed}, Provider: "pleo"}
	if !w.Matches(domain.EventRefreshFailed, "pleo", "c") || w.Matches(domain.EventRefreshFailed, "other", "c") || w.Matches(domain.EventRefreshStarted, "pleo", "c") {
		t.Fatal("filter")
	}
	w = domain.Webhook{Connection: "c"}
	if !w.Matches(domain.EventConnectionCreated, "", "c") || w.Matches(domain.EventConnectionCreated, "", "d") {
		t.Fatal("connection filter")
	}
}
