package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/events"
	"github.com/tokenline/tokenline/projections"
)

// One method per /v1 route. The connection id is path-escaped, never
// checked here: the server says what is wrong with a malformed one.

// CreateConnection creates a connection (POST /v1/connections): it starts
// unauthenticated (never_authorised) until authorised.
func (c *Client) CreateConnection(ctx context.Context, req apitypes.CreateRequest, opts ...CallOption) (apitypes.ConnectionStatus, error) {
	return c.status(ctx, http.MethodPost, apitypes.RouteConnections, req, opts)
}

// status calls a route that answers a connection's status.
func (c *Client) status(ctx context.Context, method, path string, body any, opts []CallOption) (apitypes.ConnectionStatus, error) {
	var st apitypes.ConnectionStatus
	err := c.do(ctx, method, path, body, &st, "connection status", opts)
	return st, err
}

// ListConnections lists the connections that were not deleted (GET
// /v1/connections), oldest first. It also reads a bare JSON array.
func (c *Client) ListConnections(ctx context.Context, opts ...CallOption) ([]apitypes.ConnectionStatus, error) {
	var raw json.RawMessage
	if err := c.do(ctx, http.MethodGet, apitypes.RouteConnections, nil, &raw, "connection list", opts); err != nil {
		return nil, err
	}
	var list apitypes.ListResponse
	var err error
	if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] == '[' {
		err = json.Unmarshal(t, &list.Connections)
	} else {
		err = json.Unmarshal(raw, &list)
	}
	if err != nil {
		return nil, &DecodeError{Method: http.MethodGet, Path: apitypes.RouteConnections, What: "connection list", Err: err}
	}
	return list.Connections, nil
}

// GetConnection returns one connection's status (GET
// /v1/connections/{id}), deleted ones included.
func (c *Client) GetConnection(ctx context.Context, id string, opts ...CallOption) (apitypes.ConnectionStatus, error) {
	return c.status(ctx, http.MethodGet, apitypes.Path(apitypes.RouteConnection, id), nil, opts)
}

// UpdateConnection replaces a connection's scopes and/or configuration
// (PATCH /v1/connections/{id}); a nil field is left as is. State and tokens
// are untouched.
func (c *Client) UpdateConnection(ctx context.Context, id string, req apitypes.UpdateRequest, opts ...CallOption) (apitypes.ConnectionStatus, error) {
	return c.status(ctx, http.MethodPatch, apitypes.Path(apitypes.RouteConnection, id), req, opts)
}

// DeleteConnection deletes a connection (DELETE /v1/connections/{id}): its
// tokens are revoked and destroyed, its history is kept.
func (c *Client) DeleteConnection(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, apitypes.Path(apitypes.RouteConnection, id), nil, nil, "", nil)
}

// Authorize starts (re)authorising a connection (POST
// /v1/connections/{id}/authorize) and returns the provider's authorize URL,
// which may be used once.
func (c *Client) Authorize(ctx context.Context, id string, opts ...CallOption) (string, error) {
	path := apitypes.Path(apitypes.RouteAuthorize, id)
	var ans apitypes.AuthorizeResponse
	err := c.do(ctx, http.MethodPost, path, nil, &ans, "answer", opts)
	var de *DecodeError
	if err != nil && !errors.As(err, &de) {
		return "", err
	}
	if de != nil || ans.AuthorizeURL == "" {
		e := &DecodeError{Method: http.MethodPost, Path: path, What: "answer", msg: "the server's answer holds no authorize_url"}
		if de != nil {
			e.Err = de.Err
		}
		return "", e
	}
	return ans.AuthorizeURL, nil
}

// Token returns the connection's access token if it may be used now (GET
// /v1/connections/{id}/token), the server waiting up to its default (2 s)
// for a refresh that is due or in flight. Otherwise the error is an
// *APIError whose Gate says why: RetryLater (503 refresh_in_progress,
// retry after RetryAfter) or ActionBy (409: the user must reconnect, or
// the operator must fix the client secret or registration).
func (c *Client) Token(ctx context.Context, id string) (apitypes.TokenResponse, error) {
	var tr apitypes.TokenResponse
	err := c.do(ctx, http.MethodGet, apitypes.Path(apitypes.RouteToken, id), nil, &tr, "token answer", nil)
	return tr, err
}

// TokenWait is Token with the server's wait set (?wait=; 0: answer at once;
// at most 10 s).
func (c *Client) TokenWait(ctx context.Context, id string, wait time.Duration) (apitypes.TokenResponse, error) {
	var tr apitypes.TokenResponse
	path := apitypes.Path(apitypes.RouteToken, id) + "?wait=" + url.QueryEscape(wait.String())
	err := c.do(ctx, http.MethodGet, path, nil, &tr, "token answer", nil)
	return tr, err
}

// ReportRejection reports that an API call made with the connection's
// token was rejected with 401 or 403 (POST /v1/connections/{id}/rejections)
// and returns the connection's status afterwards.
func (c *Client) ReportRejection(ctx context.Context, id string, req apitypes.RejectionRequest, opts ...CallOption) (apitypes.ConnectionStatus, error) {
	return c.status(ctx, http.MethodPost, apitypes.Path(apitypes.RouteRejections, id), req, opts)
}

// SetClientSecret installs a provider's rotated client secret (PUT
// /v1/providers/{name}/client-secret).
func (c *Client) SetClientSecret(ctx context.Context, provider, secret string) error {
	return c.do(ctx, http.MethodPut, apitypes.Path(apitypes.RouteClientSecret, provider), apitypes.ClientSecretRequest{ClientSecret: secret}, nil, "", nil)
}

// LoginLink asks for a one-time link that signs a browser into the web UI
// (POST /v1/ui/login-links). The link is a secret until used or expired.
func (c *Client) LoginLink(ctx context.Context, opts ...CallOption) (apitypes.LoginLinkResponse, error) {
	var ans apitypes.LoginLinkResponse
	err := c.do(ctx, http.MethodPost, apitypes.RouteLoginLinks, nil, &ans, "answer", opts)
	if err == nil && ans.URL == "" {
		err = &DecodeError{Method: http.MethodPost, Path: apitypes.RouteLoginLinks, What: "answer", msg: "the server's answer holds no url"}
	}
	return ans, err
}

// EventQuery selects a connection's events: at or after Since, at or
// before Until (zero: unbounded), of the Types given (with or without the
// "tokenline." prefix; none: every type).
type EventQuery struct {
	Since, Until time.Time
	Types        []string
}

func (q EventQuery) values() url.Values {
	v := url.Values{}
	setTime(v, "since", q.Since)
	setTime(v, "until", q.Until)
	for _, t := range q.Types {
		v.Add("type", t)
	}
	return v
}

// setTime sets the query parameter name to t in RFC 3339 unless t is zero.
func setTime(v url.Values, name string, t time.Time) {
	if !t.IsZero() {
		v.Set(name, t.UTC().Format(time.RFC3339Nano))
	}
}

func withQuery(path string, v url.Values) string {
	if len(v) == 0 {
		return path
	}
	return path + "?" + v.Encode()
}

// Events returns a connection's events as CloudEvents, oldest first (GET
// /v1/connections/{id}/events).
func (c *Client) Events(ctx context.Context, id string, q EventQuery, opts ...CallOption) ([]events.Envelope, error) {
	var out []events.Envelope
	err := c.do(ctx, http.MethodGet, withQuery(apitypes.Path(apitypes.RouteEvents, id), q.values()), nil, &out, "event list", opts)
	return out, err
}

// EventsJSONL streams a connection's events as JSON Lines, one CloudEvent
// a line, oldest first (GET /v1/connections/{id}/events?format=jsonl). The
// caller reads and closes the stream; only ctx bounds it. A stream that
// ends with an error was cut off: it is not the whole history.
func (c *Client) EventsJSONL(ctx context.Context, id string, q EventQuery) (io.ReadCloser, error) {
	v := q.values()
	v.Set("format", "jsonl")
	resp, err := c.send(ctx, http.MethodGet, withQuery(apitypes.Path(apitypes.RouteEvents, id), v), nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// StateAt is the answer of GET /v1/connections/{id}/state: the connection's
// status rebuilt from its history up to At, and the events that led there.
type StateAt struct {
	ConnectionID string                    `json:"connection_id"`
	At           time.Time                 `json:"at"`
	Status       apitypes.ConnectionStatus `json:"status"`
	Events       []events.Envelope         `json:"events"`
}

// StateAt rebuilds a connection's state at the instant at (GET
// /v1/connections/{id}/state?at=). A connection that did not exist then is
// an *APIError with status 404.
func (c *Client) StateAt(ctx context.Context, id string, at time.Time, opts ...CallOption) (StateAt, error) {
	var a StateAt
	v := url.Values{"at": {at.UTC().Format(time.RFC3339Nano)}}
	err := c.do(ctx, http.MethodGet, withQuery(apitypes.Path(apitypes.RouteState, id), v), nil, &a, "state answer", opts)
	return a, err
}

// Timeline returns the incident timeline of every connection in [from, to)
// (GET /v1/events/timeline; zero times: the server's defaults, the last 24
// hours).
func (c *Client) Timeline(ctx context.Context, from, to time.Time, opts ...CallOption) (projections.TimelineReport, error) {
	v := url.Values{}
	setTime(v, "from", from)
	setTime(v, "to", to)
	var rep projections.TimelineReport
	err := c.do(ctx, http.MethodGet, withQuery(apitypes.RouteTimeline, v), nil, &rep, "timeline", opts)
	return rep, err
}
