package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// Subscription events are CloudEvents 1.0 in structured JSON, as the
// connections' events, on tokenline.webhook.<id> of the webhooks stream.
type envelope struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject"`
	Time            time.Time       `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	SchemaVersion   int             `json:"schemaversion"`
	Actor           string          `json:"actor,omitempty"`
	Data            json.RawMessage `json:"data"`
}

// eventData is the data of a subscription event (fields by type).
type eventData struct {
	URL               string   `json:"url,omitempty"`
	EventTypes        []string `json:"event_types,omitempty"`
	Provider          string   `json:"provider,omitempty"`
	Connection        string   `json:"connection,omitempty"`
	StartSeq          uint64   `json:"start_seq,omitempty"`
	SecretFingerprint string   `json:"secret_fingerprint,omitempty"`
	Reason            string   `json:"reason,omitempty"`
}

func encodeEvent(e domain.WebhookEvent) ([]byte, error) {
	d := eventData{URL: e.URL, Provider: e.Provider, Connection: e.Connection, StartSeq: e.StartSeq,
		SecretFingerprint: e.SecretFingerprint, Reason: e.Reason}
	for _, t := range e.EventTypes {
		d.EventTypes = append(d.EventTypes, "tokenline."+string(t))
	}
	data, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	src := "/tokenline"
	if e.Actor != "" {
		src += "/" + e.Actor
	}
	return json.Marshal(envelope{SpecVersion: "1.0", ID: e.ID, Source: src, Type: "tokenline." + string(e.Type),
		Subject: e.WebhookID, Time: e.Time.UTC(), DataContentType: "application/json", SchemaVersion: 1, Actor: e.Actor, Data: data})
}

func decodeEvent(b []byte) (domain.WebhookEvent, error) {
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return domain.WebhookEvent{}, fmt.Errorf("webhook: malformed subscription event: %w", err)
	}
	var d eventData
	if err := json.Unmarshal(env.Data, &d); err != nil {
		return domain.WebhookEvent{}, fmt.Errorf("webhook: malformed subscription event data: %w", err)
	}
	if env.SchemaVersion != 1 {
		return domain.WebhookEvent{}, fmt.Errorf("webhook: subscription event schema version %d is not supported", env.SchemaVersion)
	}
	t := domain.WebhookEventType(env.Type[min(len(env.Type), len("tokenline.")):])
	known := false
	for _, k := range domain.WebhookEventTypes {
		known = known || k == t
	}
	if !known {
		return domain.WebhookEvent{}, errors.New("webhook: unknown subscription event type " + env.Type)
	}
	types, err := domain.ParseEventTypeFilter(d.EventTypes)
	if err != nil {
		return domain.WebhookEvent{}, err
	}
	return domain.WebhookEvent{ID: env.ID, WebhookID: env.Subject, Type: t, Time: env.Time, Actor: env.Actor,
		URL: d.URL, EventTypes: types, Provider: d.Provider, Connection: d.Connection, StartSeq: d.StartSeq,
		SecretFingerprint: d.SecretFingerprint, Reason: d.Reason}, nil
}

// DeadLetter is the record of an event given up on after the bounded
// attempts, on tokenline.webhook.<id>.dead. It names the event; the event
// itself stays on the connections' stream (replay re-sends it).
type DeadLetter struct {
	Webhook     string    `json:"webhook"`
	EventID     string    `json:"event_id"`
	EventType   string    `json:"event_type"`
	Connection  string    `json:"connection"`
	StreamSeq   uint64    `json:"stream_seq"`
	Attempts    int       `json:"attempts"`
	LastStatus  int       `json:"last_status,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	Time        time.Time `json:"time"`
	Instance    string    `json:"instance,omitempty"`
	FirstFailed time.Time `json:"first_failed"`
}

// Attempt is one line of a subscription's delivery log.
type Attempt struct {
	Time       time.Time `json:"time"`
	EventID    string    `json:"event_id"`
	EventType  string    `json:"event_type"`
	Connection string    `json:"connection"`
	StreamSeq  uint64    `json:"stream_seq"`
	Attempt    int       `json:"attempt"`
	// Outcome: delivered, failed (will be retried), dead_letter, gone
	// (410: subscription disabled), replayed.
	Outcome   string        `json:"outcome"`
	Status    int           `json:"status,omitempty"`
	Error     string        `json:"error,omitempty"`
	LatencyMS float64       `json:"latency_ms"`
	NextRetry *time.Time    `json:"next_retry,omitempty"`
	Instance  string        `json:"instance,omitempty"`
	latency   time.Duration `json:"-"`
}
