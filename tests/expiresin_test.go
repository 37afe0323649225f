package tests

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenline/tokenline/cmd/tokenline/app"
	"github.com/tokenline/tokenline/domain"
)

// A token endpoint that answers a refresh with a negative expires_in (a
// lifetime in the past: garbage, RFC 6749 §5.1 wants a positive number)
// must not make tokenline refresh again at once, and again, as fast as the
// provider answers, appending two events each time: the response's tokens
// are kept (the provider rotated the refresh token: refusing them would
// lose the grant), with the lifetime treated as not given.
//
// The provider is a real sandbox behind a real proxy that rewrites
// expires_in in the refresh answers only.
func TestNegativeExpiresInDoesNotLoopRefreshes(t *testing.T) {
	sb, addr, base := sandboxOnLoopback(t, "client-garbled", "garbled-admin")

	var refreshes atomic.Int64
	target, _ := url.Parse(base)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Header.Get("X-Grant") != "refresh_token" || resp.StatusCode != http.StatusOK {
			return nil
		}
		refreshes.Add(1)
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			return err
		}
		m["expires_in"] = -3600
		b, _ = json.Marshal(m)
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
		return nil
	}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	psrv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm() // the proxy forwards r.Form re-encoded below
		body := r.PostForm.Encode()
		r.Body = io.NopCloser(bytes.NewReader([]byte(body)))
		r.ContentLength = int64(len(body))
		r.Header.Set("X-Grant", r.PostForm.Get("grant_type"))
		proxy.ServeHTTP(w, r)
	})}
	go func() { _ = psrv.Serve(pl) }()
	t.Cleanup(func() { psrv.Close() })

	t.Setenv("TL_TEST_GARBLED_SECRET", sb.ClientSecret())
	file := filepath.Join(t.TempDir(), "providers.yaml")
	yaml := "providers:\n  - preset: sandbox\n  - name: garbled\n" +
		"    authorization_url: " + base + "/sandbox/oauth/authorize\n" +
		"    token_url: http://" + pl.Addr().String() + "/sandbox/oauth/token\n" +
		"    client_id: client-garbled\n    client_secret_env: TL_TEST_GARBLED_SECRET\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	in := start(t, func(c *app.Config) {
		c.HTTPAddr = addr
		c.ProvidersFile = file
	})
	c, err := in.Lifecycle.Create(ctxT(t), "garbled", []string{"users:read"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	authorise(t, in, c.ID)
	if err := refreshNow(t, in, c.ID); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	time.Sleep(2 * time.Second) // the scheduler ticks every 50 ms
	if n := refreshes.Load(); n > 1 {
		t.Fatalf("%d refreshes in 2 s after one answer with expires_in -3600", n)
	}
	got := load(t, in, c.ID)
	if got.State != domain.StateActive || !got.TokensHeld {
		t.Fatalf("state %s, tokens held %v", got.State, got.TokensHeld)
	}
	if exp := got.Tokens.AccessTokenExpiresAt; !exp.After(time.Now()) {
		t.Fatalf("the access token is recorded as expiring at %v, in the past", exp)
	}
	tok, _, err := in.Lifecycle.TokenWait(ctxT(t), c.ID, 0)
	if err != nil || tok == "" {
		t.Fatalf("no token handed out: %v", err)
	}
}
