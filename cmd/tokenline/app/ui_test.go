package app

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
)

// `tokenline ui` prints a one-time login link that signs a browser in once;
// /metrics needs the API token by default.
func TestUICommandAndMetricsAuth(t *testing.T) {
	m := startServer(t)
	c := newCLI(t, m, m.BaseURL)
	hc := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(u string, hdr ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", u, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}

	// serve's banner into a pipe or file names no code, only how to get one.
	var banner strings.Builder
	printUILine(&banner, m)
	if got := banner.String(); strings.Contains(got, "code=") || !strings.Contains(got, m.BaseURL+"/ui/") || !strings.Contains(got, "tokenline ui") {
		t.Fatalf("UI line into a pipe: %q", got)
	}

	out := c.ok("ui")
	link, rest, _ := strings.Cut(out, "\n")
	if !strings.HasPrefix(link, m.BaseURL+"/ui/login?code=") || !strings.Contains(rest, "works once") {
		t.Fatalf("tokenline ui printed:\n%s", out)
	}
	resp := get(link)
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 || !resp.Cookies()[0].HttpOnly {
		t.Fatalf("opening the link: %d %v", resp.StatusCode, resp.Header["Set-Cookie"])
	}
	if resp = get(link); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("opening the link again: %d", resp.StatusCode)
	}
	var ll apitypes.LoginLinkResponse
	if err := json.Unmarshal([]byte(c.ok("ui", "--json")), &ll); err != nil || !strings.HasPrefix(ll.URL, m.BaseURL+"/ui/login?code=") || ll.URL == link {
		t.Fatalf("tokenline ui --json: %+v %v", ll, err)
	}
	// The link printed at start (on a terminal) comes from the same place.
	if l, exp := m.LoginLink(); !strings.HasPrefix(l, m.BaseURL+"/ui/login?code=") || time.Until(exp) <= 0 {
		t.Fatalf("Main.LoginLink: %s %v", l, exp)
	}
	_, _, err := c.execCtx(t.Context(), nil, nil, "ui", "--server", m.BaseURL, "--token", "wrong")
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("tokenline ui with a wrong token: %v", err)
	}
	for _, s := range c.outputs() {
		if strings.Contains(s, m.APIToken()) {
			t.Fatal("an output carries the API token")
		}
	}

	if resp := get(m.BaseURL + "/metrics"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/metrics without the token: %d", resp.StatusCode)
	}
	if resp := get(m.BaseURL+"/metrics", "Authorization", "Bearer "+m.APIToken()); resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics with the token: %d", resp.StatusCode)
	}
}

func TestMetricsAuthFlag(t *testing.T) {
	c := DefaultConfig()
	if !c.MetricsAuth {
		t.Fatal("--metrics-auth is off by default")
	}
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	c.BindFlags(fs)
	if err := ApplyEnv(fs, func(k string) (string, bool) { return "false", k == "TOKENLINE_METRICS_AUTH" }); err != nil || c.MetricsAuth {
		t.Fatalf("TOKENLINE_METRICS_AUTH=false: %v %v", c.MetricsAuth, err)
	}
}

// The API token file is refused when group or others may access it, as the
// vault key is; a 0600 file is read; a missing one is created 0600.
func TestAPITokenFileMode(t *testing.T) {
	t.Setenv("TOKENLINE_API_TOKEN", "")
	dir := t.TempDir()
	path := filepath.Join(dir, "api-token")
	if err := os.WriteFile(path, []byte("tl_secret_value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := NewMain()
	m.Config.DataDir = dir
	if err := m.loadAPIToken(); err != nil || m.APIToken() != "tl_secret_value" {
		t.Fatalf("0600 token file: %v", err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		m := NewMain()
		m.Config.DataDir = dir
		err := m.loadAPIToken()
		if err == nil || !strings.Contains(err.Error(), "chmod 600 "+path) || strings.Contains(err.Error(), "tl_secret_value") {
			t.Fatalf("mode %04o: %v", mode, err)
		}
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := m.loadAPIToken(); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("a directory as token file: %v", err)
	}
	m2 := NewMain()
	m2.Config.DataDir = t.TempDir()
	if err := m2.loadAPIToken(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(m2.APITokenPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("created token file: %v %v", err, fi)
	}
}
