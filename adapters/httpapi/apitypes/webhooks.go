package apitypes

import "time"

// The webhook routes (issue 12; adapters/webhook delivers).
const (
	RouteWebhooks          = "/v1/webhooks"
	RouteWebhook           = "/v1/webhooks/{id}"
	RouteWebhookPause      = "/v1/webhooks/{id}/pause"
	RouteWebhookResume     = "/v1/webhooks/{id}/resume"
	RouteWebhookSecret     = "/v1/webhooks/{id}/secret"
	RouteWebhookDeliveries = "/v1/webhooks/{id}/deliveries"
	RouteWebhookReplay     = "/v1/webhooks/{id}/replay"
)

// WebhookCreateRequest is the body of POST /v1/webhooks.
type WebhookCreateRequest struct {
	// URL receives the events (https unless the server allows http).
	URL string `json:"url"`
	// EventTypes filters by event type ("refresh.failed" or
	// "tokenline.refresh.failed"); empty: every type.
	EventTypes []string `json:"event_types,omitempty"`
	// Provider, if set, delivers only the events of that provider's
	// connections.
	Provider string `json:"provider,omitempty"`
	// Connection, if set, delivers only that connection's events.
	Connection string `json:"connection,omitempty"`
}

// Webhook is a subscription as the API shows it. Secret is present only in
// the answers of create and of secret rotation: it is shown once.
type Webhook struct {
	ID                string    `json:"id"`
	URL               string    `json:"url"`
	EventTypes        []string  `json:"event_types"`
	Provider          string    `json:"provider,omitempty"`
	Connection        string    `json:"connection,omitempty"`
	State             string    `json:"state"`
	Reason            string    `json:"reason,omitempty"`
	SecretFingerprint string    `json:"secret_fingerprint"`
	CreatedAt         time.Time `json:"created_at"`
	UpdatedAt         time.Time `json:"updated_at"`
	Secret            string    `json:"secret,omitempty"`
}

// WebhookList is the answer of GET /v1/webhooks.
type WebhookList struct {
	Webhooks []Webhook `json:"webhooks"`
}

// WebhookAttempt is one delivery attempt of the log.
type WebhookAttempt struct {
	Time       time.Time  `json:"time"`
	EventID    string     `json:"event_id"`
	EventType  string     `json:"event_type"`
	Connection string     `json:"connection"`
	StreamSeq  uint64     `json:"stream_seq"`
	Attempt    int        `json:"attempt"`
	Outcome    string     `json:"outcome"`
	Status     int        `json:"status,omitempty"`
	Error      string     `json:"error,omitempty"`
	LatencyMS  float64    `json:"latency_ms"`
	NextRetry  *time.Time `json:"next_retry,omitempty"`
	Instance   string     `json:"instance,omitempty"`
}

// WebhookDeadLetter is an event given up on after the bounded attempts.
type WebhookDeadLetter struct {
	EventID     string    `json:"event_id"`
	EventType   string    `json:"event_type"`
	Connection  string    `json:"connection"`
	StreamSeq   uint64    `json:"stream_seq"`
	Attempts    int       `json:"attempts"`
	LastStatus  int       `json:"last_status,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	FirstFailed time.Time `json:"first_failed"`
	Time        time.Time `json:"time"`
}

// WebhookDeliveries is the answer of GET /v1/webhooks/{id}/deliveries: the
// recent attempts (oldest first), the dead letters, and the lag (events not
// yet acknowledged; absent when not known, e.g. a paused subscription).
type WebhookDeliveries struct {
	Webhook     string              `json:"webhook"`
	Lag         *uint64             `json:"lag,omitempty"`
	Attempts    []WebhookAttempt    `json:"attempts"`
	DeadLetters []WebhookDeadLetter `json:"dead_letters"`
}

// WebhookReplayRequest is the body of POST /v1/webhooks/{id}/replay.
type WebhookReplayRequest struct {
	From time.Time  `json:"from"`
	To   *time.Time `json:"to,omitempty"`
}

// WebhookReplayResponse says what a replay sent.
type WebhookReplayResponse struct {
	Matched   int `json:"matched"`
	Delivered int `json:"delivered"`
	Failed    int `json:"failed"`
}
