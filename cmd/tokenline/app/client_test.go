package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/adapters/httpapi/client"
	"github.com/tokenline/tokenline/adapters/porttest"
	"github.com/tokenline/tokenline/domain"
)

// ---- helpers -------------------------------------------------------------

// startServer runs a real tokenline on loopback port 0.
func startServer(t *testing.T) *Main {
	t.Helper()
	m := NewMain()
	m.Config.DataDir = t.TempDir()
	m.Config.NATSListen = "127.0.0.1:0"
	m.Config.HTTPAddr = "127.0.0.1:0"
	m.Config.SandboxConsent = "approve"
	m.Config.LogLevel = "error"
	m.LogOutput = &porttest.LogBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Run(ctx); err != nil {
		t.Fatalf("start tokenline: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// cli runs the tokenline command tree in process.
type cli struct {
	t     *testing.T
	m     *Main
	mu    sync.Mutex
	seen  []string // every output, to check that the API token never appears
	flags []string
}

func newCLI(t *testing.T, m *Main, server string) *cli {
	return &cli{t: t, m: m, flags: []string{"--server", server, "--token", m.APIToken()}}
}

func (c *cli) outputs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.seen)
}

func (c *cli) record(s ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen = append(c.seen, s...)
}

// exec runs args (the API flags are appended) and returns stdout, stderr and
// the error RunE returned.
func (c *cli) exec(args ...string) (string, string, error) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.execCtx(ctx, nil, nil, append(args, c.flags...)...)
}

func (c *cli) execCtx(ctx context.Context, out, errOut *porttest.LogBuffer, args ...string) (string, string, error) {
	if out == nil {
		out = &porttest.LogBuffer{}
	}
	if errOut == nil {
		errOut = &porttest.LogBuffer{}
	}
	root := NewRootCommand(ctx, out, errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	c.record(out.String(), errOut.String())
	if err != nil {
		c.record(err.Error())
	}
	return out.String(), errOut.String(), err
}

// ok runs args and fails the test on an error.
func (c *cli) ok(args ...string) string {
	c.t.Helper()
	out, errOut, err := c.exec(args...)
	if err != nil {
		c.t.Fatalf("tokenline %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// createConnection creates a sandbox connection and returns its id.
func (c *cli) createConnection(config ...string) string {
	c.t.Helper()
	args := []string{"connections", "create", "--provider", "sandbox", "--scope", "export-jobs:read", "--scope", "users:read", "--json"}
	for _, kv := range config {
		args = append(args, "--config", kv)
	}
	var st map[string]any
	out := c.ok(args...)
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		c.t.Fatalf("create --json: %v\n%s", err, out)
	}
	id, _ := st["id"].(string)
	if !domain.ValidConnectionID(id) {
		c.t.Fatalf("create --json: id %q is not a connection id\n%s", id, out)
	}
	return id
}

func lineWith(out string, words ...string) string {
	for l := range strings.SplitSeq(out, "\n") {
		all := true
		for _, w := range words {
			if !strings.Contains(l, w) {
				all = false
				break
			}
		}
		if all {
			return l
		}
	}
	return ""
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startTail runs `events tail args...` until stop is called, once it says
// it is subscribed (its stderr holds want). stop cancels it and returns what
// it returned; it fails the test if tail does not stop within 10 s.
func (c *cli) startTail(t *testing.T, want string, args ...string) (out *porttest.LogBuffer, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	out, errOut := &porttest.LogBuffer{}, &porttest.LogBuffer{}
	done := make(chan error, 1)
	go func() {
		_, _, err := c.execCtx(ctx, out, errOut, append([]string{"events", "tail"}, args...)...)
		done <- err
	}()
	deadline := time.After(15 * time.Second)
	for !strings.Contains(errOut.String(), want) {
		select {
		case err := <-done:
			t.Fatalf("events tail returned before subscribing: %v\nstderr: %s", err, errOut)
		case <-deadline:
			t.Fatalf("events tail did not subscribe; stderr: %s", errOut)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return out, func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("tail did not stop when its context was cancelled")
			return nil
		}
	}
}

// ---- end to end against a real Main ---------------------------------------

func TestClientCommands(t *testing.T) {
	m := startServer(t)
	testClientCommands(t, m, m.BaseURL)
}

// testClientCommands runs the client commands against the API at server
// (m's own, or one wired by hand).
func testClientCommands(t *testing.T, m *Main, server string) {
	c := newCLI(t, m, server)
	t.Cleanup(func() {
		for _, s := range c.outputs() {
			if strings.Contains(s, m.APIToken()) {
				t.Errorf("the API token was printed:\n%s", s)
			}
		}
	})

	id := c.createConnection("company=acme")
	createdAt := time.Now()
	time.Sleep(20 * time.Millisecond) // later events get a later time

	t.Run("create prints the status", func(t *testing.T) {
		out := c.ok("connections", "create", "--scope", "users:read", "--config", "env=test")
		for _, want := range []string{"State:", "unauthenticated", "never_authorised (This connection has not been connected yet)", "users:read", "env=test", "Needs authorisation"} {
			if !strings.Contains(out, want) {
				t.Errorf("create output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("list", func(t *testing.T) {
		out := c.ok("connections", "list")
		if !strings.HasPrefix(out, "ID") || !strings.Contains(strings.SplitN(out, "\n", 2)[0], "STATE") {
			t.Errorf("list has no header:\n%s", out)
		}
		if l := lineWith(out, id); !strings.Contains(l, "unauthenticated") || !strings.Contains(l, "never_authorised") || !strings.Contains(l, "sandbox") {
			t.Errorf("list line of %s = %q, want sandbox unauthenticated never_authorised:\n%s", id, l, out)
		}
		// Aligned: the STATE column starts at the same offset on every line.
		lines := strings.Split(strings.TrimSpace(out), "\n")
		col := strings.Index(lines[0], "STATE")
		for _, l := range lines[1:] {
			if len(l) <= col || l[col-1] != ' ' || l[col] == ' ' {
				t.Errorf("column STATE (offset %d) is not aligned in %q", col, l)
			}
		}

		raw := c.ok("connections", "list", "--json")
		var v struct {
			Connections []struct {
				ID    string `json:"id"`
				State string `json:"state"`
			} `json:"connections"`
		}
		if err := json.Unmarshal([]byte(raw), &v); err != nil || len(v.Connections) < 2 {
			t.Fatalf("list --json: %v\n%s", err, raw)
		}
	})

	t.Run("get", func(t *testing.T) {
		raw := c.ok("connections", "get", id, "--json")
		var st apitypes.ConnectionStatus
		if err := json.Unmarshal([]byte(raw), &st); err != nil {
			t.Fatalf("get --json does not parse: %v\n%s", err, raw)
		}
		ri, _ := domain.ReasonNeverAuthorised.Info()
		if st.ID != id || st.Provider != "sandbox" || st.State != domain.StateUnauthenticated || st.Reason != domain.ReasonNeverAuthorised ||
			st.ReasonText != ri.UserText || len(st.Scopes) != 2 || st.Config["company"] != "acme" ||
			!st.NeedsReauthorisation || !strings.HasSuffix(st.ReauthoriseURL, apitypes.ReauthorisePath(id)) {
			t.Errorf("get --json = %+v", st)
		}
		out := c.ok("connections", "get", id)
		for _, want := range []string{id, "sandbox", "unauthenticated", ri.UserText, "export-jobs:read users:read", "company=acme", "none held"} {
			if !strings.Contains(out, want) {
				t.Errorf("get lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("authorize prints the URL", func(t *testing.T) {
		out, errOut, err := c.exec("connections", "authorize", id)
		if err != nil {
			t.Fatal(err)
		}
		u, perr := url.Parse(strings.TrimSpace(out))
		if perr != nil || u.Path != "/sandbox/oauth/authorize" || "http://"+u.Host != m.BaseURL {
			t.Fatalf("authorize printed %q, want one URL under %s/sandbox/oauth/authorize", out, m.BaseURL)
		}
		if u.Query().Get("state") == "" || u.Query().Get("code_challenge") == "" {
			t.Errorf("authorize URL has no state or PKCE challenge: %s", u)
		}
		if !strings.Contains(errOut, "Open this URL") {
			t.Errorf("stderr = %q", errOut)
		}
		if out := c.ok("connections", "get", id); !strings.Contains(lineWith(out, "State:"), "reauthorising") {
			t.Errorf("after authorize, get says:\n%s", out)
		}
	})

	t.Run("errors carry the API's message", func(t *testing.T) {
		_, _, err := c.exec("connections", "get", "not-a-connection")
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || !strings.Contains(err.Error(), "the connection id must be a lowercase UUID") {
			t.Errorf("get of a malformed id: %v", err)
		}
		missing := "00000000-0000-4000-8000-000000000000"
		_, _, err = c.exec("connections", "get", missing)
		if !errors.As(err, &ae) || ae.Status != http.StatusNotFound || !strings.Contains(err.Error(), "no such connection") || !strings.Contains(err.Error(), missing) {
			t.Errorf("get of an unknown id: %v", err)
		}
		_, _, err = c.exec("connections", "create", "--provider", "nope", "--scope", "x")
		if err == nil || !strings.Contains(err.Error(), `no provider named "nope" is configured`) {
			t.Errorf("create with an unknown provider: %v", err)
		}
		_, _, err = c.exec("connections", "create", "--config", "novalue")
		if err == nil || !strings.Contains(err.Error(), "want key=value") {
			t.Errorf("create with a bad --config: %v", err)
		}
	})

	t.Run("wrong token is a clear 401", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _, err := c.execCtx(ctx, nil, nil, "connections", "list", "--server", server, "--token", "tl_wrong")
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
			t.Fatalf("wrong token: %v", err)
		}
		for _, want := range []string{"a valid API token is required", "401", "--token"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("401 error %q lacks %q", err, want)
			}
		}
		if strings.Contains(err.Error(), "tl_wrong") {
			t.Errorf("the error repeats the token: %v", err)
		}
	})

	t.Run("token file", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, _, err := c.execCtx(ctx, nil, nil, "connections", "list", "--server", server, "--token-file", m.APITokenPath)
		if err != nil || !strings.Contains(out, id) {
			t.Fatalf("list with --token-file: %v\n%s", err, out)
		}
		_, _, err = c.execCtx(ctx, nil, nil, "connections", "list", "--server", server, "--token-file", filepath.Join(t.TempDir(), "missing"))
		if err == nil || !strings.Contains(err.Error(), "read API token file") {
			t.Errorf("missing token file: %v", err)
		}
	})

	t.Run("audit", func(t *testing.T) {
		out := c.ok("audit", id)
		if l := lineWith(out, "connection.created"); !strings.Contains(l, "provider=sandbox") || !strings.Contains(l, "scopes=export-jobs:read,users:read") {
			t.Errorf("audit connection.created line = %q:\n%s", l, out)
		}
		if lineWith(out, "authorisation.started") == "" {
			t.Errorf("audit lacks authorisation.started:\n%s", out)
		}
		if !strings.HasPrefix(out, "TIME") {
			t.Errorf("audit has no header:\n%s", out)
		}

		out = c.ok("audit", id, "--type", "authorisation.started")
		if lineWith(out, "connection.created") != "" || lineWith(out, "authorisation.started") == "" {
			t.Errorf("audit --type authorisation.started:\n%s", out)
		}
		out = c.ok("audit", id, "--since", "1h", "--type", "tokenline.connection.created")
		if lineWith(out, "connection.created") == "" {
			t.Errorf("audit --since 1h:\n%s", out)
		}
		out = c.ok("audit", id, "--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
		if !strings.Contains(out, "No events match") {
			t.Errorf("audit --since in the future:\n%s", out)
		}
		if _, _, err := c.exec("audit", id, "--since", "yesterday-ish"); err == nil || !strings.Contains(err.Error(), "RFC 3339") {
			t.Errorf("audit with a bad --since: %v", err)
		}

		out = c.ok("audit", id, "--jsonl")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) < 2 {
			t.Fatalf("audit --jsonl:\n%s", out)
		}
		for _, l := range lines {
			var ev struct{ Type, Subject string }
			if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.Subject != id || !strings.HasPrefix(ev.Type, "tokenline.") {
				t.Errorf("audit --jsonl line %q: %v", l, err)
			}
		}
		var arr []map[string]any
		if raw := c.ok("audit", id, "--json"); json.Unmarshal([]byte(raw), &arr) != nil || len(arr) != len(lines) {
			t.Errorf("audit --json:\n%s", raw)
		}
	})

	t.Run("replay at", func(t *testing.T) {
		out := c.ok("replay", "--connection", id, "--at", createdAt.UTC().Format(time.RFC3339Nano))
		if !strings.Contains(lineWith(out, "State:"), "unauthenticated") || !strings.Contains(lineWith(out, "Reason:"), "never_authorised") {
			t.Errorf("replay at creation:\n%s", out)
		}
		if lineWith(out, "connection.created") == "" || lineWith(out, "authorisation.started") != "" {
			t.Errorf("replay at creation lists the wrong events:\n%s", out)
		}
		out = c.ok("replay", "--connection", id, "--at", "now")
		if !strings.Contains(lineWith(out, "State:"), "reauthorising") || lineWith(out, "authorisation.started") == "" {
			t.Errorf("replay now:\n%s", out)
		}
		_, _, err := c.exec("replay", "--connection", id, "--at", "2000-01-01T00:00:00Z")
		if err == nil || !strings.Contains(err.Error(), "did not exist at that time") {
			t.Errorf("replay before creation: %v", err)
		}
		raw := c.ok("replay", "--connection", id, "--at", "now", "--json")
		var v struct {
			Status struct{ State string } `json:"status"`
		}
		if err := json.Unmarshal([]byte(raw), &v); err != nil || v.Status.State != "reauthorising" {
			t.Errorf("replay --json: %v\n%s", err, raw)
		}
		if _, _, err := c.exec("replay", "--at", "now"); err == nil || !strings.Contains(err.Error(), "--connection") {
			t.Errorf("replay --at without --connection: %v", err)
		}
	})

	t.Run("replay timeline", func(t *testing.T) {
		out := c.ok("replay", "--from", "1h", "--to", "now")
		if l := lineWith(out, id, "connection.created"); !strings.Contains(l, "unauthenticated") || !strings.Contains(l, "never_authorised") {
			t.Errorf("timeline lacks the creation of %s:\n%s", id, out)
		}
		if l := lineWith(out, id, "authorisation.started"); !strings.Contains(l, "reauthorising") {
			t.Errorf("timeline lacks the authorisation of %s:\n%s", id, out)
		}
		if strings.Index(out, lineWith(out, id, "connection.created")) > strings.Index(out, lineWith(out, id, "authorisation.started")) {
			t.Errorf("timeline is not in stream order:\n%s", out)
		}
		if !regexp.MustCompile(`(?m)^Timeline .*: \d+ events, \d+ state changes$`).MatchString(out) {
			t.Fatalf("timeline has no summary line:\n%s", out)
		}
		if !regexp.MustCompile(`(?m)^\s+\d+ connections? went unauthenticated with never_authorised$`).MatchString(out) {
			t.Errorf("timeline does not count the creations:\n%s", out)
		}
		if !regexp.MustCompile(`(?m)^\s+1 connection went reauthorising with never_authorised$`).MatchString(out) {
			t.Errorf("timeline counts one entry into reauthorising:\n%s", out)
		}
		if _, _, err := c.exec("replay", "--from", "now", "--to", "1h"); err == nil || !strings.Contains(err.Error(), "before") {
			t.Errorf("timeline with --to before --from: %v", err)
		}
	})

	t.Run("authorised connection", func(t *testing.T) {
		aid := c.createConnection()
		porttest.CompleteAuthorisation(t, server, strings.TrimSpace(c.ok("connections", "authorize", aid)))
		out := c.ok("connections", "get", aid)
		if !strings.Contains(lineWith(out, "State:"), "active") || lineWith(out, "Access token expires:") == "" || lineWith(out, "Reason:") != "" {
			t.Errorf("get of an authorised connection:\n%s", out)
		}
		if l := lineWith(c.ok("connections", "list"), aid); !strings.Contains(l, "active") || !strings.Contains(l, "(in ") {
			t.Errorf("list line of an authorised connection: %q", l)
		}
		if l := lineWith(c.ok("audit", aid), "authorisation.completed"); !strings.Contains(l, "token_expires_at=") {
			t.Errorf("audit authorisation.completed line: %q", l)
		}
		if l := lineWith(c.ok("replay", "--from", "10m"), aid, "authorisation.completed"); !strings.Contains(l, "active") {
			t.Errorf("timeline authorisation.completed line: %q", l)
		}
		// The access token itself is never printed.
		api, err := client.New(server, m.APIToken())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tok, err := api.Token(ctx, aid)
		if err != nil || tok.AccessToken == "" {
			t.Fatalf("token: %v", err)
		}
		for _, s := range c.outputs() {
			if strings.Contains(s, tok.AccessToken) {
				t.Errorf("an access token was printed:\n%s", s)
			}
		}
	})

	t.Run("events tail", func(t *testing.T) {
		out, stop := c.startTail(t, "Tailing tokenline.conn.>", "--nats-url", m.NATSURL(), "--creds", m.NATSReaderFile())
		newID := c.createConnection("tail=yes")
		waitFor(t, "the new connection's event", func() bool { return lineWith(out.String(), newID, "connection.created") != "" })
		if err := stop(); err != nil {
			t.Errorf("tail returned %v", err)
		}
		l := lineWith(out.String(), newID, "connection.created")
		if !strings.Contains(l, "provider=sandbox") || !strings.Contains(l, "config={tail:yes}") {
			t.Errorf("tail line = %q", l)
		}
		if _, err := time.Parse(time.RFC3339Nano, strings.Fields(l)[0]); err != nil {
			t.Errorf("tail line does not start with the time: %q", l)
		}
	})

	t.Run("events tail one connection", func(t *testing.T) {
		out, stop := c.startTail(t, "Tailing tokenline.conn."+id, "--json", "--connection", id, "--nats-url", m.NATSURL(), "--creds", m.NATSReaderFile())
		other := c.createConnection()
		c.ok("connections", "authorize", id)
		// Both events are published on one NATS connection, in this order: once
		// the second arrived, the first would have too had it matched.
		waitFor(t, "the authorisation event", func() bool { return strings.Contains(out.String(), "tokenline.authorisation.started") })
		_ = stop()
		if strings.Contains(out.String(), other) {
			t.Errorf("tail --connection printed another connection's event:\n%s", out)
		}
		for l := range strings.SplitSeq(strings.TrimSpace(out.String()), "\n") {
			var ev struct{ Subject string }
			if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.Subject != id {
				t.Errorf("tail --json line %q: %v", l, err)
			}
		}
	})

	t.Run("delete", func(t *testing.T) {
		victim := c.createConnection()
		out := c.ok("connections", "delete", victim)
		if !strings.Contains(out, "Deleted connection "+victim) {
			t.Errorf("delete printed %q", out)
		}
		if out := c.ok("connections", "list"); strings.Contains(out, victim) {
			t.Errorf("list still shows the deleted connection:\n%s", out)
		}
		_, _, err := c.exec("connections", "delete", victim)
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusGone || !strings.Contains(err.Error(), "deleted") {
			t.Errorf("second delete: %v", err)
		}
		if out := c.ok("audit", victim); lineWith(out, "connection.deleted") == "" {
			t.Errorf("audit of the deleted connection:\n%s", out)
		}
	})

	t.Run("exit status", func(t *testing.T) {
		if testing.Short() {
			t.Skip("runs a subprocess")
		}
		code, stderr := runCLIProcess(t, "connections", "get", "00000000-0000-4000-8000-000000000000", "--server", server, "--token", m.APIToken())
		if code == 0 || !strings.Contains(stderr, "no such connection") || !strings.Contains(stderr, "404") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
		code, stderr = runCLIProcess(t, "audit", id, "--server", server, "--token", "tl_wrong")
		if code == 0 || !strings.Contains(stderr, "401") || !strings.Contains(stderr, "a valid API token is required") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
		c.record(stderr)
		code, _ = runCLIProcess(t, "connections", "list", "--server", server, "--token", m.APIToken())
		if code != 0 {
			t.Errorf("list exited %d", code)
		}
	})
}

// runCLIProcess runs the command tree in a child process, as cmd/tokenline's
// main does, and returns its exit code and stderr.
func runCLIProcess(t *testing.T, args ...string) (int, string) {
	t.Helper()
	b, _ := json.Marshal(args)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCLIHelperProcess$")
	cmd.Env = append(os.Environ(), "TOKENLINE_CLI_HELPER_ARGS="+string(b))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), stderr.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, stderr.String()
}

// TestCLIHelperProcess is the child of runCLIProcess; it does what
// cmd/tokenline's main does.
func TestCLIHelperProcess(t *testing.T) {
	raw := os.Getenv("TOKENLINE_CLI_HELPER_ARGS")
	if raw == "" {
		t.Skip("helper process for runCLIProcess")
	}
	var args []string
	if err := json.Unmarshal([]byte(raw), &args); err != nil {
		os.Exit(3)
	}
	root := NewRootCommand(context.Background(), os.Stdout, os.Stderr)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		os.Stderr.WriteString("tokenline: " + err.Error() + "\n")
		os.Exit(1)
	}
	os.Exit(0)
}

// ---- without a server ------------------------------------------------------

func TestClientUnreachableServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var out, errOut bytes.Buffer
	root := NewRootCommand(context.Background(), &out, &errOut)
	root.SetArgs([]string{"connections", "list", "--server", "http://" + addr, "--token", "secret-token"})
	err = root.Execute()
	if err == nil || !strings.Contains(err.Error(), "cannot reach tokenline at http://"+addr) {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), "secret-token") || strings.Contains(out.String()+errOut.String(), "secret-token") {
		t.Errorf("the token was printed: %v", err)
	}
}

func TestAPITokenResolution(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tok")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	envFile := filepath.Join(dir, "envtok")
	if err := os.WriteFile(envFile, []byte("from-env-file"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	all := map[string]string{envAPIToken: "from-env", envAPITokenFile: envFile}
	for _, tc := range []struct {
		name string
		o    clientOptions
		want string
		err  string
	}{
		{"flag wins", clientOptions{token: "from-flag", tokenFile: file, lookupEnv: env(all)}, "from-flag", ""},
		{"file flag beats env", clientOptions{tokenFile: file, lookupEnv: env(all)}, "from-file", ""},
		{"env token", clientOptions{lookupEnv: env(all)}, "from-env", ""},
		{"env file", clientOptions{lookupEnv: env(map[string]string{envAPITokenFile: envFile})}, "from-env-file", ""},
		{"empty file", clientOptions{tokenFile: empty, lookupEnv: env(nil)}, "", "is empty"},
		{"missing file", clientOptions{tokenFile: filepath.Join(dir, "nope"), lookupEnv: env(nil)}, "", "read API token file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.o.apiToken()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}

	o := clientOptions{lookupEnv: env(map[string]string{envServer: "http://example.test:9/"})}
	if u, err := o.serverURL(); err != nil || u.String() != "http://example.test:9" {
		t.Errorf("server from env = %v, %v", u, err)
	}
	o = clientOptions{lookupEnv: env(nil)}
	if u, err := o.serverURL(); err != nil || u.String() != DefaultServerURL {
		t.Errorf("default server = %v, %v", u, err)
	}
	o = clientOptions{server: "ftp://x", lookupEnv: env(nil)}
	if _, err := o.serverURL(); err == nil {
		t.Error("ftp server URL accepted")
	}
}

func TestParseWhen(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"2026-11-28T10:02:13Z":           time.Date(2026, 11, 28, 10, 2, 13, 0, time.UTC),
		"2026-11-28T10:02:13.5+01:00":    time.Date(2026, 11, 28, 9, 2, 13, 5e8, time.UTC),
		"2026-11-27":                     time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC),
		"now":                            now,
		"1h":                             now.Add(-time.Hour),
		"90s":                            now.Add(-90 * time.Second),
		"2d":                             now.Add(-48 * time.Hour),
		"1d12h":                          now.Add(-36 * time.Hour),
		"15m ago":                        now.Add(-15 * time.Minute),
		"2026-11-28T10:02:13.123456789Z": time.Date(2026, 11, 28, 10, 2, 13, 123456789, time.UTC),
	} {
		got, err := parseWhen("--since", in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseWhen(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "yesterday", "1x", "d", "xd1h", "10:00"} {
		if _, err := parseWhen("--since", in, now); err == nil || !strings.Contains(err.Error(), "--since") {
			t.Errorf("parseWhen(%q) = %v, want an error naming the flag", in, err)
		}
	}
}

func TestParseConfigPairs(t *testing.T) {
	got, err := parseConfigPairs([]string{"a=1", "b=x=y", "c="})
	if err != nil || got["a"] != "1" || got["b"] != "x=y" || got["c"] != "" || len(got) != 3 {
		t.Errorf("got %v, %v", got, err)
	}
	for _, bad := range [][]string{{"novalue"}, {"=v"}, {"a=1", "a=2"}} {
		if _, err := parseConfigPairs(bad); err == nil {
			t.Errorf("parseConfigPairs(%q) accepted", bad)
		}
	}
}

func TestEventDetails(t *testing.T) {
	for data, want := range map[string]string{
		`{"provider":"sandbox","scopes":["a","b"],"config":{"k":"v"}}`:                                                             "provider=sandbox scopes=a,b config={k:v}",
		`{"terminal":true,"class":"terminal","error_code":"invalid_grant","http_status":400,"attempt":1,"reason":"invalid_grant"}`: "attempt=1 class=terminal reason=invalid_grant error_code=invalid_grant http_status=400",
		`{"attempt_id":"x","tokens":{"access_token_fp":"fp","access_token_expires_at":"2026-11-28T10:00:00Z","scopes":["a"]}}`:     "granted_scopes=a token_expires_at=2026-11-28T10:00:00.000Z",
		`{"http_status":401,"terminal":false,"access_token_fp":"fp"}`:                                                              "http_status=401",
		`{"error_description":"user said no"}`:                                                                                     `error_description="user said no"`,
		`{}`:                                                                                                                       "",
		``:                                                                                                                         "",
	} {
		if got := eventDetails(json.RawMessage(data)); got != want {
			t.Errorf("eventDetails(%s) = %q, want %q", data, got, want)
		}
	}
}

func TestAPIErrorText(t *testing.T) {
	e := &APIError{&client.APIError{Status: 404, Code: "not_found", Message: "no such connection"}}
	if got := e.Error(); got != "no such connection (HTTP 404 not_found)" {
		t.Errorf("got %q", got)
	}
	e = &APIError{&client.APIError{Status: 401, Code: "unauthorized", Message: "a valid API token is required"}}
	if !strings.Contains(e.Error(), envAPIToken) {
		t.Errorf("401 text gives no hint: %q", e.Error())
	}
	e = &APIError{&client.APIError{Status: 502}}
	if got := e.Error(); got != "Bad Gateway (HTTP 502 bad_gateway)" {
		t.Errorf("got %q", got)
	}
}
