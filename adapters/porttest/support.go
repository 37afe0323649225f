package porttest

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// The helpers below are not contracts: they are the test support that
// several test packages share (httpapi, sandbox, provider, the client,
// cmd/tokenline/app and the end-to-end tests; apidoc.go: httpapi and
// examples/consumer), kept here because porttest depends on nothing of
// ours but domain.

// LogBuffer is a goroutine-safe io.Writer that collects what concurrent
// handlers, loggers or commands write, for a test to read while they run.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// SkewClock is a domain.Clock reading real time plus a skew that a test
// moves forward (Advance), to make tokens due or attempts expire without
// sleeping. After waits in real time. The zero value reads real time.
type SkewClock struct{ skew atomic.Int64 }

var _ domain.Clock = (*SkewClock)(nil)

// Now implements domain.Clock.
func (c *SkewClock) Now() time.Time { return time.Now().Add(time.Duration(c.skew.Load())) }

// After implements domain.Clock.
func (c *SkewClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Advance moves the clock forward by d.
func (c *SkewClock) Advance(d time.Duration) { c.skew.Add(int64(d)) }

var noRedirect = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// Redirect requests u without following redirects; the answer must be a
// redirect (3xx), whose status and Location it returns.
func Redirect(t testing.TB, u string) (int, *url.URL) {
	t.Helper()
	resp, err := noRedirect.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode/100 != 3 {
		t.Fatalf("GET %s: status %d, Location %q, want a redirect", u, resp.StatusCode, resp.Header.Get("Location"))
	}
	return resp.StatusCode, loc
}

// Consent follows an authorize URL through a sandbox that consents by
// itself (consent mode approve or deny) and returns the URL it redirects
// to, which must be tokenline's OAuth callback.
func Consent(t testing.TB, authorizeURL string) *url.URL {
	t.Helper()
	_, loc := Redirect(t, authorizeURL)
	if loc.Path != "/oauth/callback" {
		t.Fatalf("the sandbox redirected to %s, want the callback", loc)
	}
	return loc
}

// CompleteAuthorisation consents (Consent) and delivers the redirect to the
// OAuth callback of the tokenline serving base, which must answer 303.
func CompleteAuthorisation(t testing.TB, base, authorizeURL string) {
	t.Helper()
	if status, _ := Redirect(t, base+Consent(t, authorizeURL).RequestURI()); status != http.StatusSeeOther {
		t.Fatalf("callback: status %d, want 303", status)
	}
}
