package tests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/roundtrip"
	"github.com/tokenline/tokenline/adapters/sandbox"
	"github.com/tokenline/tokenline/cmd/tokenline/app"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
)

// startWithProviders starts tokenline with a providers file that declares
// the sandbox preset plus extra (detection:, probe: lines, indented for
// the provider's entry).
func startWithProviders(t testing.TB, extra string) *instance {
	t.Helper()
	path := filepath.Join(t.TempDir(), "providers.yaml")
	doc := "providers:\n  - preset: sandbox\n" + extra
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return startTB(t, func(c *app.Config) { c.ProvidersFile = path })
}

// The detection rules of the three provider variants that do not answer
// 401: a 403 {}, a 200 and a 400 with an error body.
const variantRules = `    detection:
      - status: 403
      - status: 200
        body: {ok: false, error: invalid_auth}
      - status: 400
        body: {error.code: invalid_access_token}
`

// apiMode switches how the sandbox's API answers a dead token.
func apiMode(t testing.TB, in *instance, mode string) {
	t.Helper()
	admin(t, in, "api-mode", map[string]string{"dead_token": mode}, nil)
}

// callMe calls the sandbox's API with a token and returns the answer.
func callMe(t testing.TB, in *instance, token, query string) (status int, www string, body []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, in.BaseURL+"/sandbox/api/me"+query, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ = io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body
}

// postRejection reports an answer through POST /v1/connections/{id}/rejections.
func postRejection(t testing.TB, in *instance, id string, req map[string]any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(req)
	r, _ := http.NewRequest(http.MethodPost, in.BaseURL+"/v1/connections/"+id+"/rejections", bytes.NewReader(b))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+in.APIToken())
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// connected creates and authorises a connection and returns it with its
// access token.
func connected(t testing.TB, in *instance) (id, token string) {
	t.Helper()
	id = create(t, in, nil)
	authorise(t, in, id)
	token, _, err := in.Lifecycle.Token(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	return id, token
}

// Each way a provider signals a dead token, with the rule that names it
// (403 Bearer invalid_token needs none), makes the connection
// unauthenticated (access_token_rejected: the one refresh gets
// invalid_grant), both when the integration reports the answer through
// POST /rejections and when the RoundTripper sees it.
func TestDeadTokenVariantsWithRules(t *testing.T) {
	in := startWithProviders(t, variantRules)
	for _, mode := range []string{sandbox.DeadToken401, sandbox.DeadToken403Empty, sandbox.DeadToken403Bearer, sandbox.DeadToken200Error, sandbox.DeadToken400Error} {
		t.Run(mode+"/rejections", func(t *testing.T) {
			apiMode(t, in, mode)
			id, tok := connected(t, in)
			admin(t, in, "revoke-grants", nil, nil)
			st, www, body := callMe(t, in, tok, "")
			code, out := postRejection(t, in, id, map[string]any{"status": st, "www_authenticate": www, "body": string(body),
				"access_token_fp": domain.Fingerprint(tok)})
			if code != 200 || out["state"] != "unauthenticated" || out["reason"] != "access_token_rejected" {
				t.Fatalf("answer %d %q %s reported: %d %v", st, www, body, code, out)
			}
			if h := history(t, in, id); !hasSuffix(h, "access.rejected", "refresh.started", "refresh.failed:terminal", "tokens.invalidated") {
				t.Fatalf("history %v", h)
			}
		})
		t.Run(mode+"/roundtripper", func(t *testing.T) {
			apiMode(t, in, mode)
			id, _ := connected(t, in)
			client := (&roundtrip.Transport{Gate: in.Lifecycle, Reporter: lifecycle.Reporter{S: in.Lifecycle}, ConnectionID: id}).Client()
			admin(t, in, "revoke-grants", nil, nil)
			resp, err := client.Get(in.BaseURL + "/sandbox/api/me")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := deadBody(mode); !strings.Contains(string(body), want) {
				t.Fatalf("the caller got %d %q, want the provider's body with %q", resp.StatusCode, body, want)
			}
			if c := load(t, in, id); c.State != domain.StateUnauthenticated || c.Reason != domain.ReasonAccessTokenRejected {
				t.Fatalf("after %d: %s %s", resp.StatusCode, c.State, c.Reason)
			}
			if _, err := client.Get(in.BaseURL + "/sandbox/api/me"); !errors.Is(err, domain.ErrUnauthenticated) {
				t.Fatalf("next call: %v", err)
			}
		})
	}
}

// deadBody is a piece of the body the sandbox answers a dead token with.
func deadBody(mode string) string {
	switch mode {
	case sandbox.DeadToken403Empty:
		return "{}"
	case sandbox.DeadToken200Error:
		return "invalid_auth"
	case sandbox.DeadToken400Error:
		return "invalid_access_token"
	}
	return "invalid_token"
}

// Without a rule (the default), a 403 {} is recorded only through
// /rejections and not reported by the RoundTripper; a 200 error body is
// refused; 403 insufficient_scope stays recorded only even with a 403 rule.
func TestDeadTokenWithoutRuleRecordedOnly(t *testing.T) {
	in := start(t, nil)
	apiMode(t, in, sandbox.DeadToken403Empty)
	id, tok := connected(t, in)
	client := (&roundtrip.Transport{Gate: in.Lifecycle, Reporter: lifecycle.Reporter{S: in.Lifecycle}, ConnectionID: id}).Client()
	admin(t, in, "revoke-grants", nil, nil)
	n := len(history(t, in, id))
	resp, err := client.Get(in.BaseURL + "/sandbox/api/me")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 || len(history(t, in, id)) != n {
		t.Fatalf("403 {} via the RoundTripper: %d, %d new events", resp.StatusCode, len(history(t, in, id))-n)
	}
	code, out := postRejection(t, in, id, map[string]any{"status": 403, "body": "{}", "access_token_fp": domain.Fingerprint(tok)})
	if code != 200 || out["state"] != "active" {
		t.Fatalf("403 {} via /rejections: %d %v", code, out)
	}
	if h := history(t, in, id); len(h) != n+1 || h[n] != "access.rejected" {
		t.Fatalf("history %v", h[n:])
	}
	apiMode(t, in, sandbox.DeadToken200Error)
	if code, out := postRejection(t, in, id, map[string]any{"status": 200, "body": `{"ok":false,"error":"invalid_auth"}`}); code != 400 || out["error"] != "invalid_command" {
		t.Fatalf("200 without a rule: %d %v", code, out)
	}

	// insufficient_scope with a 403 rule: recorded only.
	in2 := startWithProviders(t, variantRules)
	id2, tok2 := connected(t, in2)
	client2 := (&roundtrip.Transport{Gate: in2.Lifecycle, Reporter: lifecycle.Reporter{S: in2.Lifecycle}, ConnectionID: id2}).Client()
	resp, err = client2.Get(in2.BaseURL + "/sandbox/api/me?require_scope=accounts:read")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	c := load(t, in2, id2)
	if resp.StatusCode != 403 || c.State != domain.StateActive || history(t, in2, id2)[len(history(t, in2, id2))-1] != "access.rejected" {
		t.Fatalf("insufficient_scope: %d %s %v", resp.StatusCode, c.State, history(t, in2, id2))
	}
	if got, _, _ := in2.Lifecycle.Token(ctxT(t), id2); got != tok2 {
		t.Fatal("insufficient_scope changed the token")
	}
}

// A grant revoked at the provider is found by the probe with no API
// traffic from the integration, through the same path as a reported 401;
// probes that find the grant alive append nothing. Both probe kinds:
// introspection, and a GET judged by the rules (403 {} with a 403 rule).
func TestProbeDetectsRevocationWithoutTraffic(t *testing.T) {
	for _, c := range []struct{ name, extra, mode string }{
		{"introspection", "    probe: {introspection: true, every: 1s}\n", sandbox.DeadToken401},
		{"get", "    detection: [{status: 403}]\n    probe: {get: /sandbox/api/me, every: 1s}\n", sandbox.DeadToken403Empty},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := startWithProviders(t, c.extra)
			apiMode(t, in, c.mode)
			id, _ := connected(t, in)
			n := len(history(t, in, id))
			eventually(t, 20*time.Second, "three probes finding the grant alive", func() bool {
				return probeCount(t, in, "sandbox", lifecycle.ProbeAlive) >= 3
			})
			if h := history(t, in, id); len(h) != n {
				t.Fatalf("probes of a live grant appended %v", h[n:])
			}
			admin(t, in, "revoke-grants", nil, nil)
			eventually(t, 20*time.Second, "the probe to find the revoked grant", func() bool {
				return load(t, in, id).State == domain.StateUnauthenticated
			})
			if c := load(t, in, id); c.Reason != domain.ReasonAccessTokenRejected {
				t.Fatalf("reason %s", c.Reason)
			}
			eventually(t, 10*time.Second, "tokens.invalidated", func() bool { return len(history(t, in, id)) >= n+4 })
			if h := history(t, in, id); !slices.Equal(h[n:], []string{"access.rejected", "refresh.started", "refresh.failed:terminal", "tokens.invalidated"}) {
				t.Fatalf("history after revocation %v", h[n:])
			}
			if probeCount(t, in, "sandbox", lifecycle.ProbeDead) < 1 {
				t.Fatal("dead probe not counted")
			}
			if s := in.logs.String(); strings.Contains(s, "ory_at_") || strings.Contains(s, "ory_rt_") {
				t.Fatal("a token reached the logs")
			}
		})
	}
}

// BenchmarkRevocationToUnauthenticated prints the time from a revocation
// at the provider to the connection being unauthenticated, with
// introspection probes every 2 s and no API traffic. Target: at most the
// interval (+10 % jitter) plus a few seconds.
func BenchmarkRevocationToUnauthenticated(b *testing.B) {
	const every = 2 * time.Second
	in := startWithProviders(b, "    probe: {introspection: true, every: 2s}\n")
	var took []time.Duration
	for range b.N {
		id, _ := connected(b, in)
		// Let the first probe of the connection pass (its phase is random).
		time.Sleep(every + every/5)
		start := time.Now()
		admin(b, in, "revoke-grants", nil, nil)
		eventually(b, 30*time.Second, "unauthenticated", func() bool {
			return load(b, in, id).State == domain.StateUnauthenticated
		})
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	b.ReportMetric(took[len(took)/2].Seconds(), "s-median")
	b.ReportMetric(took[len(took)-1].Seconds(), "s-max")
	fmt.Printf("revocation to unauthenticated with probes every %s: median %s, max %s over %d (target <= %s + a few s); "+
		"without probes (baseline): at the next refresh or API call, up to the access token's lifetime (%s here)\n",
		every, took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond), len(took), every+every/10, in.Config.SandboxAccessTTL)
}

// probeCount reads tokenline_probes_total{provider,outcome} from /metrics.
func probeCount(t testing.TB, in *instance, provider, outcome string) float64 {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, in.BaseURL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+in.APIToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	want := fmt.Sprintf(`tokenline_probes_total{outcome=%q,provider=%q} `, outcome, provider)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), want); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

func hasSuffix(h []string, tail ...string) bool {
	return len(h) >= len(tail) && slices.Equal(h[len(h)-len(tail):], tail)
}

// Two instances split the probes (--probe-shard 0/2 and 1/2): each probes
// its share, and together they find every revoked grant with no API
// traffic. (That the shares are disjoint is TestProbeShard's.)
func TestProbeShardsAcrossInstances(t *testing.T) {
	const n = 8
	pa := filepath.Join(t.TempDir(), "a.yaml")
	if err := os.WriteFile(pa, []byte("providers:\n  - preset: sandbox\n    probe: {introspection: true, every: 1s}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := start(t, func(c *app.Config) { c.ProvidersFile, c.ProbeShard, c.Instance = pa, "0/2", "a" })
	t.Setenv("TL_TEST_SANDBOX_SECRET", a.Sandbox.ClientSecret())
	pb := filepath.Join(t.TempDir(), "b.yaml")
	doc := fmt.Sprintf(`providers:
  - name: sandbox
    authorization_url: %[1]s/sandbox/oauth/authorize
    token_url: %[1]s/sandbox/oauth/token
    introspection_url: %[1]s/sandbox/oauth/token/introspect
    client_id: %[2]s
    client_secret_env: TL_TEST_SANDBOX_SECRET
    probe: {introspection: true, every: 1s}
`, a.BaseURL, a.Sandbox.ClientID())
	if err := os.WriteFile(pb, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	b := start(t, func(c *app.Config) {
		c.ProvidersFile, c.ProbeShard, c.Instance = pb, "1/2", "b"
		c.NATSURL, c.NATSCreds, c.VaultKeyFile = a.NATSURL(), a.NATSCredsFile(), sharedKey(t, a)
	})
	ids := make([]string, n)
	for i := range ids {
		ids[i], _ = connected(t, a)
	}
	eventually(t, 20*time.Second, "both instances probing", func() bool {
		return probeCount(t, a, "sandbox", lifecycle.ProbeAlive) >= 2 && probeCount(t, b, "sandbox", lifecycle.ProbeAlive) >= 2
	})
	admin(t, a, "revoke-grants", nil, nil)
	eventually(t, 30*time.Second, "every revoked grant found", func() bool {
		for _, id := range ids {
			if load(t, a, id).State != domain.StateUnauthenticated {
				return false
			}
		}
		return true
	})
	// A probe counts its outcome after its event is stored: the last count
	// may land just after the last connection is seen unauthenticated.
	var da, db float64
	eventually(t, 10*time.Second, "every dead probe counted", func() bool {
		da, db = probeCount(t, a, "sandbox", lifecycle.ProbeDead), probeCount(t, b, "sandbox", lifecycle.ProbeDead)
		return da+db >= n
	})
	if da+db != n || da == 0 || db == 0 {
		t.Fatalf("dead grants found: %v by a, %v by b; want %d in all, some by each", da, db, n)
	}
}
