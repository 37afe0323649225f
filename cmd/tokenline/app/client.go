package app

// The client side of the tokenline CLI: a small HTTP client for the /v1 API
// and the options every client command shares (server URL, API token, output
// format). The commands themselves are in client_cmds.go.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// Client defaults and environment variables.
const (
	DefaultServerURL    = "http://127.0.0.1:8080"
	DefaultAPITokenFile = "./tokenline-data/api-token"
	DefaultNATSURL      = "nats://127.0.0.1:4222"

	envServer        = "TOKENLINE_SERVER"
	envAPIToken      = "TOKENLINE_API_TOKEN"
	envAPITokenFile  = "TOKENLINE_API_TOKEN_FILE"
	envClientNATSURL = "TOKENLINE_NATS_URL"
	envNATSCreds     = "TOKENLINE_NATS_CREDS"

	// clientTimeout bounds one request/response exchange (not streams).
	clientTimeout = 30 * time.Second
	// maxErrorBody bounds how much of an error answer is read.
	maxErrorBody = 64 << 10
)

// clientOptions are the flags shared by the commands that call the API.
type clientOptions struct {
	server    string
	token     string
	tokenFile string
	json      bool

	// lookupEnv reads the environment (os.LookupEnv; tests may replace it).
	lookupEnv func(string) (string, bool)
}

// bindClientFlags registers the API flags as persistent flags of cmd, so that
// every subcommand accepts them.
func bindClientFlags(cmd *cobra.Command, o *clientOptions) {
	fs := cmd.PersistentFlags()
	fs.StringVar(&o.server, "server", "", "tokenline server URL (env "+envServer+", default "+DefaultServerURL+")")
	fs.StringVar(&o.token, "token", "", "API token (env "+envAPIToken+"; prefer the token file or the environment)")
	fs.StringVar(&o.tokenFile, "token-file", "", "file holding the API token (env "+envAPITokenFile+", default "+DefaultAPITokenFile+")")
	fs.BoolVar(&o.json, "json", false, "print the raw JSON answered by the API")
}

func (o *clientOptions) env(name string) string {
	lookup := o.lookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	v, _ := lookup(name)
	return strings.TrimSpace(v)
}

// serverURL resolves the server: --server, then TOKENLINE_SERVER, then the
// default.
func (o *clientOptions) serverURL() (*url.URL, error) {
	raw := o.server
	if raw == "" {
		raw = o.env(envServer)
	}
	if raw == "" {
		raw = DefaultServerURL
	}
	u, err := url.Parse(strings.TrimRight(raw, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server URL %q is not an http(s) URL", redactURL(raw))
	}
	return u, nil
}

// apiToken resolves the API token. A flag given on the command line wins over
// the environment; a token given directly wins over a file: --token,
// --token-file, TOKENLINE_API_TOKEN, TOKENLINE_API_TOKEN_FILE, then the
// default file. Errors never contain the token.
func (o *clientOptions) apiToken() (string, error) {
	if o.token != "" {
		return strings.TrimSpace(o.token), nil
	}
	if o.tokenFile != "" {
		return readTokenFile(o.tokenFile, "--token-file")
	}
	if v := o.env(envAPIToken); v != "" {
		return v, nil
	}
	if p := o.env(envAPITokenFile); p != "" {
		return readTokenFile(p, envAPITokenFile)
	}
	tok, err := readTokenFile(DefaultAPITokenFile, "")
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("no API token: give --token or --token-file, or set %s or %s (the default file %s does not exist; run this where `tokenline serve` keeps its data directory)",
			envAPIToken, envAPITokenFile, DefaultAPITokenFile)
	}
	return tok, err
}

func readTokenFile(path, from string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is named below, once
		}
		where := path
		if from != "" {
			where += " (" + from + ")"
		}
		return "", fmt.Errorf("read API token file %s: %w", where, err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("API token file %s is empty", path)
	}
	return tok, nil
}

// client builds the API client from the options.
func (o *clientOptions) client() (*apiClient, error) {
	u, err := o.serverURL()
	if err != nil {
		return nil, err
	}
	tok, err := o.apiToken()
	if err != nil {
		return nil, err
	}
	return &apiClient{base: u, token: tok, http: &http.Client{}}, nil
}

// apiClient calls the tokenline /v1 API.
type apiClient struct {
	base  *url.URL
	token string
	http  *http.Client
}

// APIError is an error answered by the API ({"error","message"} with a 4xx
// or 5xx status).
type APIError struct {
	Status  int
	Code    string
	Message string
	Method  string
	Path    string
}

func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	code := e.Code
	if code == "" {
		code = strings.ToLower(strings.ReplaceAll(http.StatusText(e.Status), " ", "_"))
	}
	s := fmt.Sprintf("%s (HTTP %d %s)", msg, e.Status, code)
	switch e.Status {
	case http.StatusUnauthorized:
		s += "; the API token was not accepted: check --token, --token-file, " + envAPIToken + " or " + envAPITokenFile
	case http.StatusForbidden:
		s += "; the API token may not do this"
	}
	return s
}

// do sends one request and decodes a JSON answer into out: a *[]byte or
// *json.RawMessage receives the raw body (what --json prints), nil discards
// it. body, unless nil, is sent as JSON. A 4xx or 5xx answer is an
// *APIError carrying the API's message.
func (c *apiClient) do(ctx context.Context, method, path string, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, clientTimeout)
	defer cancel()
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, pathOnly(path), err)
	}
	switch o := out.(type) {
	case nil:
		return nil
	case *[]byte:
		*o = b
		return nil
	case *json.RawMessage:
		*o = b
		return nil
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return fmt.Errorf("%s %s: the server answered %d with an empty body", method, pathOnly(path), resp.StatusCode)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: the server's answer is not the expected JSON: %w", method, pathOnly(path), err)
	}
	return nil
}

// stream sends one request and returns the successful response; the caller
// reads and closes its body. There is no timeout beyond ctx.
func (c *apiClient) stream(ctx context.Context, method, path string) (*http.Response, error) {
	return c.send(ctx, method, path, nil)
}

func (c *apiClient) send(ctx context.Context, method, path string, body any) (*http.Response, error) {
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
	req.Header.Set("User-Agent", "tokenline-cli/"+Version)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("%s %s: no answer from %s within %s", method, pathOnly(path), redactURL(c.base.String()), clientTimeout)
		}
		if errors.Is(err, context.Canceled) {
			return nil, fmt.Errorf("%s %s: interrupted", method, pathOnly(path))
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("cannot reach tokenline at %s (is `tokenline serve` running? set --server or %s): %w", redactURL(c.base.String()), envServer, err)
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
	var body struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if json.Unmarshal(b, &body) == nil {
		e.Code, e.Message = body.Error, body.Message
	}
	if e.Message == "" && e.Code == "" {
		// Not the API's error shape (a proxy, or not tokenline at all): show
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

// redactURL hides any user information in a URL.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	u.User = url.User("redacted")
	return u.String()
}

// commandContext is the context of a client command: cmd's context, also
// cancelled by SIGINT or SIGTERM (the process-wide handler in main catches
// the signal, so the command must watch for it itself).
func commandContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

// writeRaw prints a raw API answer, ending it with a newline.
func writeRaw(w io.Writer, b []byte) error {
	b = bytes.TrimRight(b, "\r\n")
	if _, err := w.Write(b); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}
