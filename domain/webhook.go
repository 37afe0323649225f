package domain

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Webhook subscriptions (issue 12) are event-sourced like connections: a
// subscription is what its events say, folded by (*Webhook).Apply. They are
// stored apart from the connections' stream (adapters/webhook), but the
// rules live here.

// WebhookState is the state of a webhook subscription.
type WebhookState string

// The states of a webhook subscription.
const (
	// WebhookActive delivers matching events.
	WebhookActive WebhookState = "active"
	// WebhookPaused delivers nothing until resumed; its position is kept,
	// so resuming delivers what happened meanwhile.
	WebhookPaused WebhookState = "paused"
	// WebhookDisabled was stopped by the receiver (410 Gone); resuming
	// re-enables it from where it stopped.
	WebhookDisabled WebhookState = "disabled"
	// WebhookDeleted is final: delivery stopped, history kept.
	WebhookDeleted WebhookState = "deleted"
)

// WebhookEventType names a subscription event.
type WebhookEventType string

// The subscription events.
const (
	WebhookCreated       WebhookEventType = "webhook.created"
	WebhookPausedEvt     WebhookEventType = "webhook.paused"
	WebhookResumed       WebhookEventType = "webhook.resumed"
	WebhookDisabledEvt   WebhookEventType = "webhook.disabled"
	WebhookDeletedEvt    WebhookEventType = "webhook.deleted"
	WebhookSecretRotated WebhookEventType = "webhook.secret_rotated"
)

// WebhookEventTypes lists the subscription events in a stable order.
var WebhookEventTypes = []WebhookEventType{WebhookCreated, WebhookPausedEvt, WebhookResumed, WebhookDisabledEvt, WebhookDeletedEvt, WebhookSecretRotated}

// WebhookEvent is one change of a subscription. Only created carries the
// filter; created and secret_rotated carry the secret's fingerprint (never
// the secret).
type WebhookEvent struct {
	ID        string
	WebhookID string
	Type      WebhookEventType
	Time      time.Time
	Actor     string
	// created
	URL        string
	EventTypes []EventType
	Provider   string
	Connection string
	// StartSeq is the first connection-stream sequence the subscription
	// delivers (the stream's last sequence at creation, plus one).
	StartSeq uint64
	// created, secret_rotated
	SecretFingerprint string
	// disabled: why ("gone": the receiver answered 410).
	Reason string
	// Seq is the event's stream sequence (set by the store on read).
	Seq uint64
}

// Webhook is a subscription folded from its events.
type Webhook struct {
	ID                string
	URL               string
	EventTypes        []EventType
	Provider          string
	Connection        string
	StartSeq          uint64
	State             WebhookState
	Reason            string
	SecretFingerprint string
	CreatedAt         time.Time
	UpdatedAt         time.Time
	// Version is the stream sequence of the last applied event (0: none).
	Version uint64
}

// Apply folds one event into w.
func (w *Webhook) Apply(e WebhookEvent) {
	switch e.Type {
	case WebhookCreated:
		*w = Webhook{ID: e.WebhookID, URL: e.URL, EventTypes: slices.Clone(e.EventTypes), Provider: e.Provider,
			Connection: e.Connection, StartSeq: e.StartSeq, State: WebhookActive, SecretFingerprint: e.SecretFingerprint,
			CreatedAt: e.Time}
	case WebhookPausedEvt:
		w.State, w.Reason = WebhookPaused, ""
	case WebhookResumed:
		w.State, w.Reason = WebhookActive, ""
	case WebhookDisabledEvt:
		w.State, w.Reason = WebhookDisabled, e.Reason
	case WebhookDeletedEvt:
		w.State = WebhookDeleted
	case WebhookSecretRotated:
		w.SecretFingerprint = e.SecretFingerprint
	}
	w.UpdatedAt = e.Time
	if e.Seq > 0 {
		w.Version = e.Seq
	}
}

// DecideWebhook checks that t may happen to w now: ErrNotFound for a
// subscription that does not exist, ErrDeleted after deletion,
// ErrInvalidTransition for the rest of what is refused.
func DecideWebhook(w Webhook, t WebhookEventType) error {
	if t == WebhookCreated {
		if w.Version != 0 {
			return fmt.Errorf("%w: webhook %s exists", ErrConflict, w.ID)
		}
		return nil
	}
	if w.Version == 0 {
		return ErrNotFound
	}
	if w.State == WebhookDeleted {
		return ErrDeleted
	}
	ok := false
	switch t {
	case WebhookPausedEvt:
		ok = w.State == WebhookActive
	case WebhookResumed:
		ok = w.State == WebhookPaused || w.State == WebhookDisabled
	case WebhookDisabledEvt:
		ok = w.State == WebhookActive
	case WebhookDeletedEvt, WebhookSecretRotated:
		ok = true
	}
	if !ok {
		return fmt.Errorf("%w: a %s webhook cannot be %s", ErrInvalidTransition, w.State, strings.TrimPrefix(string(t), "webhook."))
	}
	return nil
}

// ParseEventTypeFilter checks an event-type filter: each entry is an event
// type with or without the "tokenline." prefix. Empty means every type.
func ParseEventTypeFilter(in []string) ([]EventType, error) {
	var out []EventType
	for _, s := range in {
		t := EventType(strings.TrimPrefix(strings.TrimSpace(s), "tokenline."))
		if !slices.Contains(EventTypes, t) {
			return nil, fmt.Errorf("%w: unknown event type %q", ErrInvalidCommand, s)
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out, nil
}

// Matches reports whether an event of type t of a connection of provider
// on connection id passes w's filter.
func (w *Webhook) Matches(t EventType, provider, connection string) bool {
	if len(w.EventTypes) > 0 && !slices.Contains(w.EventTypes, t) {
		return false
	}
	if w.Connection != "" && w.Connection != connection {
		return false
	}
	return w.Provider == "" || w.Provider == provider
}
