package roundtrip_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/tokenline/tokenline/adapters/roundtrip"
	"github.com/tokenline/tokenline/domain"
)

// ruleReporter knows the connection's detection rules and records the
// responses reported to it, with their bodies.
type ruleReporter struct {
	rules  domain.DetectionRules
	mu     sync.Mutex
	bodies []string
	status []int
}

func (r *ruleReporter) ReportRejection(context.Context, string, int, string, string) error {
	panic("ReportResponse is preferred")
}

func (r *ruleReporter) ReportResponse(_ context.Context, _ string, status int, _ string, body []byte, _ string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bodies, r.status = append(r.bodies, string(body)), append(r.status, status)
	return nil
}

func (r *ruleReporter) DetectionRules(string) domain.DetectionRules { return r.rules }

// With a body rule the Transport reads a bounded prefix of the body,
// reports a match with the body, and hands the caller the full body;
// a body over the bound is neither read for judging nor reported.
func TestTransportAppliesBodyRules(t *testing.T) {
	g, id, _, _ := openGate(t)
	long := `{"ok":false,"error":"invalid_auth","pad":"` + strings.Repeat("x", domain.MaxRejectionBody) + `"}`
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/dead":
			io.WriteString(w, `{"ok":false,"error":"invalid_auth"}`)
		case "/ok":
			io.WriteString(w, `{"ok":true,"items":[1,2,3]}`)
		case "/long": // chunked: no Content-Length
			w.(http.Flusher).Flush()
			io.WriteString(w, long)
		case "/forbidden":
			w.WriteHeader(403)
			io.WriteString(w, `{}`)
		}
	}))
	defer api.Close()
	rep := &ruleReporter{rules: domain.DetectionRules{Rules: []domain.DetectionRule{
		{Status: 200, Body: map[string]string{"ok": "false", "error": "invalid_auth"}},
	}}}
	client := (&roundtrip.Transport{Gate: roundtrip.FromGate(g), Reporter: rep, ConnectionID: id}).Client()
	get := func(path string) string {
		resp, err := client.Get(api.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := get("/ok"); got != `{"ok":true,"items":[1,2,3]}` {
		t.Fatalf("ok body %q", got)
	}
	if got := get("/dead"); got != `{"ok":false,"error":"invalid_auth"}` {
		t.Fatalf("dead body %q", got)
	}
	if got := get("/long"); got != long {
		t.Fatalf("long body cut: %d bytes", len(got))
	}
	get("/forbidden") // a 403 without challenge and without a 403 rule: not reported
	if len(rep.bodies) != 1 || rep.bodies[0] != `{"ok":false,"error":"invalid_auth"}` || rep.status[0] != 200 {
		t.Fatalf("reports %q %v", rep.bodies, rep.status)
	}
	rep.rules.Rules = append(rep.rules.Rules, domain.DetectionRule{Status: 403})
	get("/forbidden")
	if len(rep.status) != 2 || rep.status[1] != 403 || rep.bodies[1] != "" {
		t.Fatalf("403 rule: %q %v", rep.bodies, rep.status)
	}
}

// BenchmarkJudge is the cost the rules add to every answer: a 200 without
// rules for it, and a 200 a body rule reads.
func BenchmarkJudge(b *testing.B) {
	rules := domain.DetectionRules{Rules: []domain.DetectionRule{{Status: 403}, {Status: 200, Body: map[string]string{"ok": "false", "error": "invalid_auth"}}}}
	body := []byte(`{"ok":true,"user":{"id":"U1","name":"x"}}`)
	b.Run("200-no-rule", func(b *testing.B) {
		for range b.N {
			domain.DetectionRules{}.Judge(200, nil, nil)
		}
	})
	b.Run("200-body-rule", func(b *testing.B) {
		for range b.N {
			rules.Judge(200, nil, body)
		}
	})
}
