// Package client is a typed Go client of tokenline's /v1 HTTP API: one
// method per route, the request and answer bodies of package apitypes, and
// typed errors. The tokenline CLI and the end-to-end tests use it; so can
// any Go program that manages connections.
//
//	c, err := client.New("http://127.0.0.1:8080", apiToken)
//	st, err := c.CreateConnection(ctx, apitypes.CreateRequest{Provider: "sandbox", Scopes: []string{"users:read"}})
//	u, err := c.Authorize(ctx, st.ID) // open u in a browser
//	tok, err := c.Token(ctx, st.ID)
//
// Errors: an answer with a 4xx or 5xx status is an *APIError carrying the
// status and the API's {"error","message"} body (and, for a closed gate,
// its GateErrorBody); a server that cannot be reached is an
// *UnreachableError; a 2xx answer that is not the expected JSON is a
// *DecodeError. No error, and nothing the client logs, ever holds the API
// token or an access token.
package client

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/domain"
)

// DefaultTimeout bounds one request/response exchange (not the streams).
const DefaultTimeout = 30 * time.Second

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// Client calls the /v1 API of one tokenline server with one API token. It
// is safe for concurrent use.
type Client struct {
	base      *url.URL
	token     string
	http      *http.Client
	userAgent string
	timeout   time.Duration
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sends the requests with hc (default: a new http.Client
// without a timeout of its own).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// WithUserAgent sets the User-Agent header (default "tokenline-client").
func WithUserAgent(ua string) Option { return func(c *Client) { c.userAgent = ua } }

// WithTimeout bounds each request/response exchange (default
// DefaultTimeout; 0: only the caller's context). Streams are bounded by the
// caller's context alone.
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// New returns a client of the server at baseURL (http or https, no path
// needed; a trailing slash is ignored) presenting token as the bearer
// token. The error never holds the token, nor user information in the URL.
func New(baseURL, token string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server URL %q is not an http(s) URL", RedactURL(baseURL))
	}
	c := &Client{base: u, token: token, http: &http.Client{}, userAgent: "tokenline-client", timeout: DefaultTimeout}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// BaseURL returns the server's base URL, with any user information redacted.
func (c *Client) BaseURL() string { return RedactURL(c.base.String()) }

// ---- errors -----------------------------------------------------------------

// APIError is an answer with a 4xx or 5xx status: the API's
// {"error","message"} body, or the first line of whatever else came back.
type APIError struct {
	// Status is the HTTP status; Code and Message the API's error body.
	Status  int
	Code    string
	Message string
	// Method and Path are the request's (the path without its query).
	Method string
	Path   string
	// Gate is the body of Token's refusal (nil otherwise): a 503
	// refresh_in_progress (RetryLater) or a 409 a person must act on
	// (ActionBy).
	Gate *apitypes.GateErrorBody
	// RetryAfter is the answer's Retry-After (0 when absent).
	RetryAfter time.Duration
}

// RetryLater reports a refusal that waiting cures: Token answered 503
// refresh_in_progress (retry after RetryAfter; nobody needs to act).
func (e *APIError) RetryLater() bool {
	return e.Gate != nil && e.Code == apitypes.GateErrorRefreshInProgress
}

// ActionBy is who must act on Token's 409: domain.ActorUser (reconnect:
// reauthorisation_required) or domain.ActorOperator (client secret or
// registration: operator_action_required); ActorNone for any other error.
func (e *APIError) ActionBy() domain.Actor {
	if e.Gate == nil || e.Status != http.StatusConflict {
		return domain.ActorNone
	}
	switch e.Code {
	case apitypes.GateErrorOperatorAction:
		return domain.ActorOperator
	case apitypes.GateErrorReauthorisation:
		return domain.ActorUser
	}
	return domain.ActorNone
}

// Error reads "message (HTTP status code)".
func (e *APIError) Error() string {
	msg := cmp.Or(e.Message, http.StatusText(e.Status))
	code := cmp.Or(e.Code, strings.ToLower(strings.ReplaceAll(http.StatusText(e.Status), " ", "_")))
	return fmt.Sprintf("%s (HTTP %d %s)", msg, e.Status, code)
}

// UnreachableError means the server could not be reached (connection
// refused, unknown host, TLS failure, ...).
type UnreachableError struct {
	// URL is the server's base URL, user information redacted.
	URL string
	Err error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach tokenline at %s: %v", e.URL, e.Err)
}

// Unwrap returns the transport's error.
func (e *UnreachableError) Unwrap() error { return e.Err }

// DecodeError is a successful answer that is not the JSON the route
// answers (a proxy's page, another server, a different version).
type DecodeError struct {
	Method string
	Path   string
	// What names the answer in the message ("connection status").
	What string
	// Err is the JSON error (nil when the JSON lacked a required field).
	Err error
	msg string
}

func (e *DecodeError) Error() string {
	if e.msg != "" {
		return e.msg
	}
	return fmt.Sprintf("the server's %s is not the expected JSON: %v", e.What, e.Err)
}

// Unwrap returns the JSON error.
func (e *DecodeError) Unwrap() error { return e.Err }

// pathError is an error about one request whose message is fixed.
type pathError struct {
	msg string
	err error
}

func (e *pathError) Error() string { return e.msg }
func (e *pathError) Unwrap() error { return e.err }

// ---- calls ------------------------------------------------------------------

// CallOption adjusts one call.
type CallOption func(*call)

type call struct {
	raw *[]byte
}

// RawBody stores the answer's body, as the server sent it, in *dst (also
// when it does not decode). The CLI prints it for --json.
func RawBody(dst *[]byte) CallOption { return func(c *call) { c.raw = dst } }

// do sends one request (body, unless nil, as JSON) and decodes a successful
// answer into out (nil: discarded). what names the answer in a DecodeError.
func (c *Client) do(ctx context.Context, method, path string, body, out any, what string, opts []CallOption) error {
	var co call
	for _, o := range opts {
		o(&co)
	}
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, pathOnly(path), err)
	}
	if co.raw != nil {
		*co.raw = b
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return &DecodeError{Method: method, Path: pathOnly(path), What: what, Err: err}
	}
	return nil
}

// send sends one request and returns the successful response; the caller
// reads and closes its body. A 4xx or 5xx answer is an *APIError.
func (c *Client) send(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("%s %s: encode request: %w", method, pathOnly(path), err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, pathOnly(path), err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) {
			return nil, &pathError{fmt.Sprintf("%s %s: no answer from %s within %s", method, pathOnly(path), c.BaseURL(), c.timeout), err}
		}
		if errors.Is(err, context.Canceled) {
			return nil, &pathError{fmt.Sprintf("%s %s: interrupted", method, pathOnly(path)), err}
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, &UnreachableError{URL: c.BaseURL(), Err: err}
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		return nil, readAPIError(resp, method, path)
	}
	return resp, nil
}

func readAPIError(resp *http.Response, method, path string) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &APIError{Status: resp.StatusCode, Method: method, Path: pathOnly(path)}
	var body apitypes.ErrorBody
	if json.Unmarshal(b, &body) == nil {
		e.Code, e.Message = body.Error, body.Message
	}
	var gate apitypes.GateErrorBody
	switch e.Code {
	case apitypes.GateErrorRefreshInProgress, apitypes.GateErrorReauthorisation, apitypes.GateErrorOperatorAction:
		if (resp.StatusCode == http.StatusConflict || resp.StatusCode == http.StatusServiceUnavailable) && json.Unmarshal(b, &gate) == nil {
			e.Gate = &gate
		}
	}
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs >= 0 && secs <= 3600 {
		e.RetryAfter = time.Duration(secs) * time.Second
	}
	if e.Message == "" && e.Code == "" {
		// Not the API's error shape (a proxy, or not tokenline at all): keep
		// the first line of what came back.
		line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
		if len(line) > 200 {
			line = line[:200] + "..."
		}
		e.Message = line
	}
	return e
}

// pathOnly strips the query from a request path for messages.
func pathOnly(p string) string {
	p, _, _ = strings.Cut(p, "?")
	return p
}

// RedactURL hides any user information in a URL. A URL that does not parse
// (a bad escape in its password, say) loses everything between its scheme
// and its last '@' instead of being returned as it is.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err == nil {
		if u.User == nil {
			return raw
		}
		u.User = url.User("redacted")
		return u.String()
	}
	prefix, rest := "", raw
	if i := strings.Index(raw, "://"); i >= 0 {
		prefix, rest = raw[:i+3], raw[i+3:]
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		return prefix + "redacted" + rest[at:]
	}
	return raw
}
