package provider_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/provider"
	"github.com/tokenline/tokenline/domain"
)

// Introspection and the GET probe against the sandbox: a live grant is
// alive, a revoked one inactive (introspection) or a 401 (GET); failures
// are errors that never contain a token.
func TestProbersAgainstSandbox(t *testing.T) {
	sb, srv, p := sandboxEnv(t)
	at, rt := authorise(t, p)
	toks := domain.Tokens{AccessToken: at, RefreshToken: rt}
	in, err := p.Prober(provider.ProbeConfig{Introspection: true, Every: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	get, err := p.Prober(provider.ProbeConfig{GetURL: srv.URL + "/sandbox/api/me", Every: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if a, err := in.Probe(ctxT(t), toks); err != nil || !a.Introspected || !a.Active {
		t.Fatalf("introspection of a live grant: %+v %v", a, err)
	}
	if a, err := get.Probe(ctxT(t), toks); err != nil || a.Status != 200 {
		t.Fatalf("GET with a live token: %+v %v", a, err)
	}
	if in.Every() != time.Minute {
		t.Fatal("Every")
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/sandbox/admin/revoke-grants", nil)
	req.Header.Set("Authorization", "Bearer "+sb.AdminToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("revoke-grants: %v", err)
	}
	resp.Body.Close()
	if a, err := in.Probe(ctxT(t), toks); err != nil || !a.Introspected || a.Active {
		t.Fatalf("introspection of a revoked grant: %+v %v", a, err)
	}
	a, err := get.Probe(ctxT(t), toks)
	if v, _ := (domain.DetectionRules{}).Judge(a.Status, a.WWWAuthenticate, a.Body); err != nil || v != domain.VerdictDead {
		t.Fatalf("GET with a revoked token: %+v %v", a, err)
	}

	// Failures: the answers are errors without a token.
	srv.Close()
	for _, pr := range []domain.Prober{in, get} {
		_, err := pr.Probe(ctxT(t), toks)
		if err == nil || strings.Contains(err.Error(), at) || strings.Contains(err.Error(), rt) {
			t.Fatalf("probe of a closed server: %v", err)
		}
	}
	for _, bad := range []provider.ProbeConfig{{Every: time.Minute}, {Introspection: true, GetURL: srv.URL, Every: time.Minute},
		{Introspection: true}, {GetURL: "ftp://x/y", Every: time.Minute}} {
		if _, err := p.Prober(bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
