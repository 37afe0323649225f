package app

// Webhooks (issue 12): the serve flags, opening adapters/webhook and the
// HTTP API's WebhookService on it. main.go calls openWebhooks, closes it
// and hands webhookService to the server; everything else is here.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/tokenline/tokenline/adapters/httpapi"
	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/vault"
	"github.com/tokenline/tokenline/adapters/webhook"
	"github.com/tokenline/tokenline/domain"
)

// WebhooksConfig is the webhook part of `tokenline serve`.
type WebhooksConfig struct {
	// AllowHTTP accepts http:// subscription URLs (development).
	AllowHTTP bool
	// AllowPrivate accepts loopback and private target addresses.
	AllowPrivate bool
	// Timeout bounds one delivery attempt.
	Timeout time.Duration
	// MaxAttempts bounds the attempts of one event before its dead letter.
	MaxAttempts int
	// BackoffBase and BackoffMax shape the retries.
	BackoffBase, BackoffMax time.Duration
	// AckWait is how long an event held by an instance that died waits
	// before another instance re-delivers it.
	AckWait time.Duration
	// Concurrency bounds the HTTP requests in flight per subscription.
	Concurrency int
	// MaxPending bounds the events of one subscription an instance holds
	// at once (the consumer's MaxAckPending).
	MaxPending int
	// PinnedTTL is how long an instance that stopped pulling keeps a
	// subscription before another instance takes it over.
	PinnedTTL time.Duration
	// SecretGrace is how long the previous secret still signs after a
	// rotation.
	SecretGrace time.Duration
	// LogKeep and LogMaxAge are the delivery log's retention per
	// subscription.
	LogKeep   int
	LogMaxAge time.Duration
}

func defaultWebhooksConfig() WebhooksConfig {
	return WebhooksConfig{Timeout: 10 * time.Second, MaxAttempts: 12, BackoffBase: time.Second, BackoffMax: 10 * time.Minute,
		AckWait: 30 * time.Second, Concurrency: 64, MaxPending: 4096, PinnedTTL: 30 * time.Second, SecretGrace: 24 * time.Hour,
		LogKeep: webhook.LogKeep, LogMaxAge: webhook.LogMaxAge}
}

// orDefault is c, or the defaults for a Config not made by DefaultConfig
// (no webhook setting but the two Allow ones). A zero in any single field
// is kept, for validate to refuse.
func (c WebhooksConfig) orDefault() WebhooksConfig {
	if bare := (WebhooksConfig{AllowHTTP: c.AllowHTTP, AllowPrivate: c.AllowPrivate}); c == bare {
		d := defaultWebhooksConfig()
		d.AllowHTTP, d.AllowPrivate = c.AllowHTTP, c.AllowPrivate
		return d
	}
	return c
}

// Bounds of the webhook flags (validate).
const (
	maxWebhookTimeout     = 10 * time.Minute
	maxWebhookAttempts    = 100000
	maxWebhookBackoff     = 24 * time.Hour
	maxWebhookAckWait     = time.Hour
	maxWebhookConcurrency = 1024
	maxWebhookPending     = 100000
	minWebhookPinnedTTL   = 3 * time.Second
	maxWebhookPinnedTTL   = 10 * time.Minute
	maxWebhookSecretGrace = 30 * 24 * time.Hour
	maxWebhookLogKeep     = 10000
	minWebhookLogMaxAge   = time.Hour
	maxWebhookLogMaxAge   = 365 * 24 * time.Hour
)

// validate checks the webhook flags before anything starts (Config.
// validateValues). A zero that adapters/webhook would silently replace by
// its default is refused like any other value out of range.
func (c WebhooksConfig) validate() error {
	c = c.orDefault()
	for _, n := range []struct {
		flag   string
		v, max int
	}{
		{"--webhooks-max-attempts", c.MaxAttempts, maxWebhookAttempts},
		{"--webhooks-concurrency", c.Concurrency, maxWebhookConcurrency},
		{"--webhooks-max-pending", c.MaxPending, maxWebhookPending},
		{"--webhooks-log-keep", c.LogKeep, maxWebhookLogKeep},
	} {
		if n.v < 1 || n.v > n.max {
			return fmt.Errorf("%s %d: want 1 to %d", n.flag, n.v, n.max)
		}
	}
	for _, d := range []struct {
		flag     string
		v        time.Duration
		min, max time.Duration
	}{
		{"--webhooks-timeout", c.Timeout, time.Millisecond, maxWebhookTimeout},
		{"--webhooks-backoff-base", c.BackoffBase, time.Millisecond, maxWebhookBackoff},
		{"--webhooks-backoff-max", c.BackoffMax, time.Millisecond, maxWebhookBackoff},
		{"--webhooks-ack-wait", c.AckWait, time.Second, maxWebhookAckWait},
		{"--webhooks-pinned-ttl", c.PinnedTTL, minWebhookPinnedTTL, maxWebhookPinnedTTL},
		{"--webhooks-secret-grace", c.SecretGrace, time.Second, maxWebhookSecretGrace},
		{"--webhooks-log-max-age", c.LogMaxAge, minWebhookLogMaxAge, maxWebhookLogMaxAge},
	} {
		if d.v < d.min || d.v > d.max {
			return fmt.Errorf("%s %s: want %s to %s", d.flag, d.v, d.min, d.max)
		}
	}
	if c.BackoffBase > c.BackoffMax {
		return fmt.Errorf("--webhooks-backoff-base %s is longer than --webhooks-backoff-max %s", c.BackoffBase, c.BackoffMax)
	}
	return nil
}

func (c *WebhooksConfig) bindFlags(fs *pflag.FlagSet) {
	*c = c.orDefault()
	fs.BoolVar(&c.AllowHTTP, "webhooks-allow-http", c.AllowHTTP, "accept plain http:// webhook URLs (development; default https only)")
	fs.BoolVar(&c.AllowPrivate, "webhooks-allow-private", c.AllowPrivate, "deliver webhooks to loopback and private addresses (checked on the address dialled; default refused)")
	fs.DurationVar(&c.Timeout, "webhooks-timeout", c.Timeout, "timeout of one webhook delivery attempt")
	fs.IntVar(&c.MaxAttempts, "webhooks-max-attempts", c.MaxAttempts, "attempts of one event before it is dead-lettered")
	fs.DurationVar(&c.BackoffBase, "webhooks-backoff-base", c.BackoffBase, "wait after a webhook's first failed attempt (doubling, with jitter)")
	fs.DurationVar(&c.BackoffMax, "webhooks-backoff-max", c.BackoffMax, "longest wait between webhook attempts (a Retry-After answer may ask for up to an hour)")
	fs.DurationVar(&c.AckWait, "webhooks-ack-wait", c.AckWait, "how long an event held by an instance that died waits before another instance delivers it (1s to 1h)")
	fs.IntVar(&c.Concurrency, "webhooks-concurrency", c.Concurrency, "webhook requests in flight per subscription (workers; 1 to 1024)")
	fs.IntVar(&c.MaxPending, "webhooks-max-pending", c.MaxPending, "events of one subscription an instance holds at once, sending or queued behind their connection's earlier event (1 to 100000)")
	fs.DurationVar(&c.PinnedTTL, "webhooks-pinned-ttl", c.PinnedTTL, "how long an instance that stopped pulling (crashed, cut off from NATS) keeps delivering a subscription before another instance takes it over (3s to 10m)")
	fs.DurationVar(&c.SecretGrace, "webhooks-secret-grace", c.SecretGrace, "how long the previous signing secret still signs (a second signature) after a rotation (1s to 720h)")
	fs.IntVar(&c.LogKeep, "webhooks-log-keep", c.LogKeep, "delivery attempts the log answers per subscription (the newest; it keeps this many batches of up to 64; 1 to 10000; every instance the same)")
	fs.DurationVar(&c.LogMaxAge, "webhooks-log-max-age", c.LogMaxAge, "how long a delivery attempt stays in the log (1h to 8760h; every instance the same)")
}

// openWebhooks opens the webhook manager (after the store, before the HTTP
// server): the streams, the secrets bucket, the subscriptions and their
// deliverers.
func (m *Main) openWebhooks(ctx context.Context, vaultKey []byte) error {
	key, err := vault.DeriveKey(vaultKey, "tokenline webhook secrets v1")
	if err != nil {
		return err
	}
	c := m.Config.Webhooks.orDefault()
	metrics, err := webhook.NewMetrics(m.registry)
	if err != nil {
		return err
	}
	m.Webhooks, err = webhook.Open(ctx, m.Store.JetStream(), webhook.Config{
		EventStream: m.Store.StreamName(), Replicas: m.Config.Replicas, SecretsKey: key,
		Safety:  webhook.Safety{AllowHTTP: c.AllowHTTP, AllowPrivate: c.AllowPrivate},
		Timeout: c.Timeout, MaxAttempts: c.MaxAttempts, BackoffBase: c.BackoffBase, BackoffMax: c.BackoffMax,
		AckWait: c.AckWait, Concurrency: c.Concurrency, MaxPending: c.MaxPending, PinnedTTL: c.PinnedTTL,
		SecretGrace: c.SecretGrace, LogKeep: c.LogKeep, LogMaxAge: c.LogMaxAge, Instance: m.Config.Instance, Logger: m.Logger.With("component", "webhooks"),
		Metrics: metrics, UserAgent: "tokenline-webhooks/" + Version,
		Provider: func(ctx context.Context, id string) (string, error) {
			if c, ok := m.Proj.Status.Confirmed(id); ok && c.Provider != "" {
				return c.Provider, nil
			}
			c, err := m.Store.Load(ctx, id)
			return c.Provider, err
		},
	})
	if err != nil {
		return err
	}
	metrics.Watch(m.Webhooks)
	return nil
}

// webhooksReady is the /readyz check "webhooks": the two streams shaped as
// required.
func (m *Main) webhooksReady() httpapi.Check {
	return httpapi.Check{Name: "webhooks", Probe: httpapi.ReadinessFunc(func(ctx context.Context) error {
		return m.Webhooks.CheckShape(ctx, jsstore.ShapeProblems)
	})}
}

// webhookService is the API's WebhookService on the manager.
type webhookService struct{ m *webhook.Manager }

var _ httpapi.WebhookService = webhookService{}

func webhookView(w domain.Webhook, secret string) apitypes.Webhook {
	types := make([]string, 0, len(w.EventTypes))
	for _, t := range w.EventTypes {
		types = append(types, "tokenline."+string(t))
	}
	return apitypes.Webhook{ID: w.ID, URL: w.URL, EventTypes: types, Provider: w.Provider, Connection: w.Connection,
		State: string(w.State), Reason: w.Reason, SecretFingerprint: w.SecretFingerprint, CreatedAt: w.CreatedAt,
		UpdatedAt: w.UpdatedAt, Secret: secret}
}

func (s webhookService) CreateWebhook(ctx context.Context, req apitypes.WebhookCreateRequest, actor string) (apitypes.Webhook, error) {
	w, secret, err := s.m.Create(ctx, webhook.CreateRequest{URL: req.URL, EventTypes: req.EventTypes, Provider: req.Provider, Connection: req.Connection, Actor: actor})
	return webhookView(w, secret), err
}

func (s webhookService) ListWebhooks(context.Context) ([]apitypes.Webhook, error) {
	var out []apitypes.Webhook
	for _, w := range s.m.List() {
		out = append(out, webhookView(w, ""))
	}
	return out, nil
}

func (s webhookService) GetWebhook(_ context.Context, id string) (apitypes.Webhook, error) {
	w, err := s.m.Get(id)
	return webhookView(w, ""), err
}

func (s webhookService) PauseWebhook(ctx context.Context, id, actor string) (apitypes.Webhook, error) {
	w, err := s.m.Pause(ctx, id, actor)
	return webhookView(w, ""), err
}

func (s webhookService) ResumeWebhook(ctx context.Context, id, actor string) (apitypes.Webhook, error) {
	w, err := s.m.Resume(ctx, id, actor)
	return webhookView(w, ""), err
}

func (s webhookService) DeleteWebhook(ctx context.Context, id, actor string) error {
	_, err := s.m.Delete(ctx, id, actor)
	return err
}

func (s webhookService) RotateWebhookSecret(ctx context.Context, id, actor string) (apitypes.Webhook, error) {
	w, secret, err := s.m.RotateSecret(ctx, id, actor)
	return webhookView(w, secret), err
}

func (s webhookService) WebhookDeliveries(ctx context.Context, id string) (apitypes.WebhookDeliveries, error) {
	out := apitypes.WebhookDeliveries{Webhook: id, Attempts: []apitypes.WebhookAttempt{}, DeadLetters: []apitypes.WebhookDeadLetter{}}
	log, err := s.m.Log(ctx, id)
	if err != nil {
		return out, err
	}
	for _, a := range log {
		out.Attempts = append(out.Attempts, apitypes.WebhookAttempt{Time: a.Time, EventID: a.EventID, EventType: a.EventType,
			Connection: a.Connection, StreamSeq: a.StreamSeq, Attempt: a.Attempt, Outcome: a.Outcome, Status: a.Status,
			Error: a.Error, LatencyMS: a.LatencyMS, NextRetry: a.NextRetry, Instance: a.Instance})
	}
	dead, err := s.m.DeadLetters(ctx, id, 100)
	if err != nil {
		return out, err
	}
	for _, d := range dead {
		out.DeadLetters = append(out.DeadLetters, apitypes.WebhookDeadLetter{EventID: d.EventID, EventType: d.EventType,
			Connection: d.Connection, StreamSeq: d.StreamSeq, Attempts: d.Attempts, LastStatus: d.LastStatus,
			LastError: d.LastError, FirstFailed: d.FirstFailed, Time: d.Time})
	}
	if w, _ := s.m.Get(id); w.State == domain.WebhookActive {
		if n, err := s.m.Lag(ctx, id); err == nil {
			out.Lag = &n
		}
	}
	return out, nil
}

func (s webhookService) ReplayWebhook(ctx context.Context, id string, from, to time.Time) (apitypes.WebhookReplayResponse, error) {
	r, err := s.m.Replay(ctx, id, from, to)
	if errors.Is(err, context.Canceled) {
		return apitypes.WebhookReplayResponse{}, err
	}
	return apitypes.WebhookReplayResponse{Matched: r.Matched, Delivered: r.Delivered, Failed: r.Failed}, err
}
