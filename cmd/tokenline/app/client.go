package app

// The client side of the tokenline CLI: the options every command that
// calls the /v1 API shares (server URL, API token, output format), the typed
// API client built from them (adapters/httpapi/client) and how its errors
// are reported. The commands are in client_connections.go, client_audit.go,
// client_replay.go and client_events.go.

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tokenline/tokenline/adapters/httpapi/client"
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
	raw := cmp.Or(o.server, o.env(envServer), DefaultServerURL)
	u, err := url.Parse(strings.TrimRight(raw, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server URL %q is not an http(s) URL", client.RedactURL(raw))
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
func (o *clientOptions) client() (*client.Client, error) {
	u, err := o.serverURL()
	if err != nil {
		return nil, err
	}
	tok, err := o.apiToken()
	if err != nil {
		return nil, err
	}
	return client.New(u.String(), tok, client.WithUserAgent("tokenline-cli/"+Version))
}

// callAPI runs fn with the API client, under the command's context (see
// commandContext).
func (o *clientOptions) callAPI(cmd *cobra.Command, fn func(ctx context.Context, c *client.Client) error) error {
	ctx, stop := commandContext(cmd)
	defer stop()
	c, err := o.client()
	if err != nil {
		return err
	}
	return fn(ctx, c)
}

// answer prints the outcome of one API call: with --json the raw answer
// (even one that does not decode), otherwise print's rendering of the
// decoded one. A failed call is reported as apiErr(what, err).
func (o *clientOptions) answer(w io.Writer, raw []byte, err error, what string, print func() error) error {
	var de *client.DecodeError
	if o.json && errors.As(err, &de) {
		return writeRaw(w, raw)
	}
	if err != nil {
		return apiErr(what, err)
	}
	if o.json {
		return writeRaw(w, raw)
	}
	return print()
}

// APIError is an error answered by the API ({"error","message"} with a 4xx
// or 5xx status), as the CLI reports it: the client's error, with a hint
// about the API token on 401 and 403.
type APIError struct {
	*client.APIError
}

func (e *APIError) Error() string {
	s := e.APIError.Error()
	switch e.Status {
	case http.StatusUnauthorized:
		s += "; the API token was not accepted: check --token, --token-file, " + envAPIToken + " or " + envAPITokenFile
	case http.StatusForbidden:
		s += "; the API token may not do this"
	}
	return s
}

// Unwrap returns the client's error.
func (e *APIError) Unwrap() error { return e.APIError }

// apiErr reports a failed API call as "what: why". An answer that does not
// decode says so by itself; an error status becomes an *APIError; an
// unreachable server gets a hint on how to name the right one.
func apiErr(what string, err error) error {
	var de *client.DecodeError
	if errors.As(err, &de) {
		return err
	}
	var ae *client.APIError
	var ue *client.UnreachableError
	switch {
	case errors.As(err, &ae):
		err = &APIError{ae}
	case errors.As(err, &ue):
		err = fmt.Errorf("cannot reach tokenline at %s (is `tokenline serve` running? set --server or %s): %w", ue.URL, envServer, ue.Err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// commandContext is the context of a client command: cmd's context, also
// cancelled by SIGINT or SIGTERM (the process-wide handler in main catches
// the signal, so the command must watch for it itself).
func commandContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	ctx := cmp.Or(cmd.Context(), context.Background())
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
