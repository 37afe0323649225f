package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/porttest"
	"github.com/tokenline/tokenline/adapters/provider"
	"github.com/tokenline/tokenline/adapters/sandbox"
	"github.com/tokenline/tokenline/cmd/tokenline/app"
	"github.com/tokenline/tokenline/domain"
)

// freeAddr returns a loopback address that was free a moment ago. The
// sandbox must know each instance's redirect URI before the instance can
// discover the sandbox, so the instances' ports are chosen up front.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// standaloneSandbox runs `tokenline sandbox` (the CLI code) on port 0 and
// returns the facts it printed, keyed by their one key, and a stop function
// that cancels it (as SIGTERM does) and returns its error.
func standaloneSandbox(t *testing.T, args ...string) (map[string]json.RawMessage, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &porttest.LogBuffer{}
	cmd := app.NewRootCommand(ctx, out, io.Discard)
	cmd.SetArgs(append([]string{"sandbox", "--http", "127.0.0.1:0", "--data-dir", t.TempDir(), "--log-level", "error"}, args...))
	done := make(chan error, 1)
	go func() { done <- cmd.Execute() }()
	stopped := false
	stop := func() error {
		cancel()
		if stopped {
			return nil
		}
		stopped = true
		select {
		case err := <-done:
			return err
		case <-time.After(15 * time.Second):
			t.Fatal("tokenline sandbox did not stop")
			return nil
		}
	}
	t.Cleanup(func() { _ = stop() })
	eventually(t, 20*time.Second, "tokenline sandbox to print ready", func() bool {
		select {
		case err := <-done:
			t.Fatalf("tokenline sandbox exited: %v\n%s", err, out.String())
		default:
		}
		return strings.Contains(out.String(), `{"ready":true}`)
	})
	facts := map[string]json.RawMessage{}
	var order []string
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		var line map[string]json.RawMessage
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil || len(line) != 1 {
			t.Fatalf("output line %q is not a one-key JSON object", sc.Text())
		}
		for k, v := range line {
			facts[k] = v
			order = append(order, k)
		}
	}
	if order[0] != "issuer" || order[len(order)-1] != "ready" {
		t.Fatalf("facts in order %v", order)
	}
	return facts, stop
}

func fact(t *testing.T, facts map[string]json.RawMessage, key string) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(facts[key], &s); err != nil {
		t.Fatalf("fact %s: %v (%s)", key, err, facts[key])
	}
	return s
}

// secretFrom reads a secret the sandbox names by file (or by environment
// variable, when the test runs with it set).
func secretFrom(t *testing.T, facts map[string]json.RawMessage, file, env string) string {
	t.Helper()
	if _, ok := facts[env]; ok {
		return os.Getenv(fact(t, facts, env))
	}
	path := fact(t, facts, file)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s %s: %v %v", file, path, err, fi)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// Two tokenline instances share one standalone sandbox (started by the CLI
// code on port 0), find it by RFC 8414 discovery from the printed issuer, and
// each connect and refresh a connection. The sandbox's stats show one code
// exchange and one refresh per connection, no refresh-token reuse, and they
// are refused without the admin token. Cancelling the command (SIGTERM)
// stops it and frees the port.
func TestStandaloneSandboxSharedByInstances(t *testing.T) {
	addrs := []string{freeAddr(t), freeAddr(t)}
	args := []string{"--client-id", "shared-client", "--consent", "approve", "--access-ttl", "1h", "--refresh-ttl", "1440h"}
	for _, a := range addrs {
		args = append(args, "--redirect-uri", "http://"+a+"/oauth/callback")
	}
	facts, stop := standaloneSandbox(t, args...)
	issuer := fact(t, facts, "issuer")
	if !strings.HasPrefix(issuer, "http://127.0.0.1:") || !strings.HasSuffix(issuer, "/sandbox") || fact(t, facts, "client_id") != "shared-client" {
		t.Fatalf("facts %s", facts)
	}
	secret := secretFrom(t, facts, "client_secret_file", "client_secret_env")
	adminToken := secretFrom(t, facts, "admin_token_file", "admin_token_env")
	for k, v := range facts {
		if strings.Contains(string(v), secret) || strings.Contains(string(v), adminToken) {
			t.Fatalf("fact %s prints a secret", k)
		}
	}
	// The printed discovery URL serves metadata whose issuer is the printed
	// issuer, and discovery from the issuer finds the sandbox's endpoints.
	resp, err := http.Get(fact(t, facts, "discovery_url"))
	if err != nil {
		t.Fatal(err)
	}
	var md sandbox.Metadata
	err = json.NewDecoder(resp.Body).Decode(&md)
	resp.Body.Close()
	if err != nil || md.Issuer != issuer || md.TokenEndpoint != issuer+"/oauth/token" {
		t.Fatalf("metadata %+v: %v", md, err)
	}
	if ep, err := provider.Discover(ctxT(t), nil, issuer); err != nil || ep.TokenURL != issuer+"/oauth/token" {
		t.Fatalf("discovery: %+v %v", ep, err)
	}

	for _, addr := range addrs {
		in := start(t, func(c *app.Config) {
			c.HTTPAddr = addr
			c.Provider, c.ProviderName, c.Issuer = "custom", "sandbox", issuer
			c.ClientID, c.ClientSecret = "shared-client", secret
		})
		id := create(t, in, map[string]string{"instance": addr})
		authorise(t, in, id)
		if err := in.Lifecycle.Refresh(ctxT(t), id, domain.TriggerManual); err != nil {
			t.Fatalf("refresh through the shared sandbox: %v", err)
		}
		if c := load(t, in, id); c.State != domain.StateActive {
			t.Fatalf("connection %s: %s %s", addr, c.State, c.Reason)
		}
	}

	statsReq := func(token string) (*http.Response, sandbox.Stats) {
		req, _ := http.NewRequest(http.MethodGet, fact(t, facts, "stats_url"), nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st sandbox.Stats
		_ = json.NewDecoder(resp.Body).Decode(&st)
		return resp, st
	}
	if resp, _ := statsReq(""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("stats without the admin token: %d", resp.StatusCode)
	}
	if resp, _ := statsReq("wrong"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("stats with a wrong token: %d", resp.StatusCode)
	}
	resp, st := statsReq(adminToken)
	if resp.StatusCode != http.StatusOK || st.TokenRequests.AuthorizationCode != 2 || st.TokenRequests.RefreshToken != 2 ||
		st.RefreshTokenReuse != 0 || st.Failures != 0 || st.Held.Grants != 2 ||
		len(st.RefreshesPerGrant) != 1 || st.RefreshesPerGrant["1"] != 2 {
		t.Fatalf("shared sandbox stats: %d %+v", resp.StatusCode, st)
	}

	if err := stop(); err != nil {
		t.Fatalf("tokenline sandbox returned %v", err)
	}
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(strings.TrimSuffix(issuer, "/sandbox"), "http://"), time.Second); err == nil {
		c.Close()
		t.Fatal("the sandbox still accepts connections after stopping")
	}
}
