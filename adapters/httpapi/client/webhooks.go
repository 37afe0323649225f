package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
)

// The /v1/webhooks routes (issue 12).

// CreateWebhook creates a webhook subscription (POST /v1/webhooks). The
// answer carries the signing secret, shown this once.
func (c *Client) CreateWebhook(ctx context.Context, req apitypes.WebhookCreateRequest, opts ...CallOption) (apitypes.Webhook, error) {
	return c.webhook(ctx, http.MethodPost, apitypes.RouteWebhooks, req, opts)
}

func (c *Client) webhook(ctx context.Context, method, path string, body any, opts []CallOption) (apitypes.Webhook, error) {
	var w apitypes.Webhook
	err := c.do(ctx, method, path, body, &w, "webhook", opts)
	return w, err
}

// ListWebhooks lists the subscriptions that were not deleted (GET
// /v1/webhooks), oldest first.
func (c *Client) ListWebhooks(ctx context.Context, opts ...CallOption) ([]apitypes.Webhook, error) {
	var l apitypes.WebhookList
	err := c.do(ctx, http.MethodGet, apitypes.RouteWebhooks, nil, &l, "webhook list", opts)
	return l.Webhooks, err
}

// GetWebhook returns one subscription (GET /v1/webhooks/{id}).
func (c *Client) GetWebhook(ctx context.Context, id string, opts ...CallOption) (apitypes.Webhook, error) {
	return c.webhook(ctx, http.MethodGet, apitypes.Path(apitypes.RouteWebhook, id), nil, opts)
}

// PauseWebhook stops delivery, keeping the position (POST .../pause).
func (c *Client) PauseWebhook(ctx context.Context, id string, opts ...CallOption) (apitypes.Webhook, error) {
	return c.webhook(ctx, http.MethodPost, apitypes.Path(apitypes.RouteWebhookPause, id), nil, opts)
}

// ResumeWebhook restarts delivery of a paused or disabled subscription
// where it stopped (POST .../resume).
func (c *Client) ResumeWebhook(ctx context.Context, id string, opts ...CallOption) (apitypes.Webhook, error) {
	return c.webhook(ctx, http.MethodPost, apitypes.Path(apitypes.RouteWebhookResume, id), nil, opts)
}

// RotateWebhookSecret replaces the signing secret (POST .../secret); the
// answer carries the new secret, shown this once.
func (c *Client) RotateWebhookSecret(ctx context.Context, id string, opts ...CallOption) (apitypes.Webhook, error) {
	return c.webhook(ctx, http.MethodPost, apitypes.Path(apitypes.RouteWebhookSecret, id), nil, opts)
}

// DeleteWebhook deletes a subscription (DELETE /v1/webhooks/{id}).
func (c *Client) DeleteWebhook(ctx context.Context, id string, opts ...CallOption) error {
	return c.do(ctx, http.MethodDelete, apitypes.Path(apitypes.RouteWebhook, id), nil, nil, "", opts)
}

// WebhookDeliveries returns the delivery log, dead letters and lag (GET
// .../deliveries).
func (c *Client) WebhookDeliveries(ctx context.Context, id string, opts ...CallOption) (apitypes.WebhookDeliveries, error) {
	var d apitypes.WebhookDeliveries
	err := c.do(ctx, http.MethodGet, apitypes.Path(apitypes.RouteWebhookDeliveries, id), nil, &d, "webhook deliveries", opts)
	return d, err
}

// ReplayWebhook re-sends the subscription's events stored from from (to:
// zero for up to now) and waits for the replay to finish: it is bounded by
// ctx only, not by the client's timeout.
func (c *Client) ReplayWebhook(ctx context.Context, id string, from, to time.Time, opts ...CallOption) (apitypes.WebhookReplayResponse, error) {
	var co call
	for _, o := range opts {
		o(&co)
	}
	req := apitypes.WebhookReplayRequest{From: from}
	if !to.IsZero() {
		req.To = &to
	}
	path := apitypes.Path(apitypes.RouteWebhookReplay, id)
	var res apitypes.WebhookReplayResponse
	resp, err := c.send(ctx, http.MethodPost, path, req)
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return res, fmt.Errorf("POST %s: read answer: %w", pathOnly(path), err)
	}
	if co.raw != nil {
		*co.raw = b
	}
	if err := json.Unmarshal(b, &res); err != nil {
		return res, &DecodeError{Method: http.MethodPost, Path: pathOnly(path), What: "webhook replay", Err: err}
	}
	return res, nil
}
