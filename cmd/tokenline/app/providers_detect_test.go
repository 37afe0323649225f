package app

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// The detection: and probe: fields are read and checked; every mistake is
// refused with the field named.
func TestProvidersFileDetectionAndProbe(t *testing.T) {
	env := func(string) (string, bool) { return "s3cret", true }
	specs, err := parseProviders([]byte(`providers:
  - name: slackish
    issuer: https://id.example
    client_id: c
    client_secret_env: X
    detection:
      - status: 403
      - status: 200
        body: {ok: false, error: invalid_auth}
    probe: {get: https://api.example/me, every: 5m}
  - preset: sandbox
    probe: {introspection: true, every: 30s}
`), env)
	if err != nil {
		t.Fatal(err)
	}
	r, err := specs[0].detectionRules()
	if err != nil || len(r.Rules) != 2 || r.Rules[0].Status != 403 || r.Rules[1].Body["ok"] != "false" || r.Rules[1].Body["error"] != "invalid_auth" {
		t.Fatalf("rules %+v %v", r, err)
	}
	pc, ok, err := specs[0].probeConfig("http://127.0.0.1:1")
	if err != nil || !ok || pc.GetURL != "https://api.example/me" || pc.Every.Minutes() != 5 || pc.Introspection {
		t.Fatalf("probe %+v %v %v", pc, ok, err)
	}
	pc, ok, err = specs[1].probeConfig("http://127.0.0.1:1")
	if err != nil || !ok || !pc.Introspection || pc.Every.Seconds() != 30 {
		t.Fatalf("sandbox probe %+v %v %v", pc, ok, err)
	}

	head := "providers:\n  - name: p\n    issuer: https://id.example\n    client_id: c\n    client_secret_env: X\n"
	for name, c := range map[string]struct{ extra, want string }{
		"status out of range": {"    detection: [{status: 99}]\n", "providers[0] (p).detection: rule 0: status 99"},
		"200 without body":    {"    detection: [{status: 200}]\n", "needs a body match"},
		"bad field path":      {"    detection: [{status: 400, body: {a..b: x}}]\n", "dotted path"},
		"unknown rule field":  {"    detection: [{status: 403, match: x}]\n", "field match not found"},
		"probe without kind":  {"    probe: {every: 5m}\n", "exactly one"},
		"probe both kinds":    {"    probe: {introspection: true, get: https://a.example/me, every: 5m}\n", "exactly one"},
		"probe bad every":     {"    probe: {introspection: true, every: 5}\n", `providers[0] (p).probe.every "5"`},
		"probe too often":     {"    probe: {introspection: true, every: 10ms}\n", "a duration from 1s"},
		"probe path":          {"    probe: {get: /api/me, every: 5m}\n", "only for the sandbox preset"},
		"probe not http":      {"    probe: {get: ftp://a.example/me, every: 5m}\n", "not an absolute http(s) URL"},
		"public introspect":   {"    client_auth: none\n    probe: {introspection: true, every: 5m}\n", "public client"},
	} {
		doc := head + c.extra
		if strings.Contains(c.extra, "client_auth: none") {
			doc = "providers:\n  - name: p\n    issuer: https://id.example\n    client_id: c\n" + c.extra
		}
		_, err := parseProviders([]byte(doc), env)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

func TestProbeShard(t *testing.T) {
	if f, err := probeOwner(""); f != nil || err != nil {
		t.Fatal("empty shard")
	}
	for _, bad := range []string{"3/3", "-1/3", "1", "a/b", "0/0", "1/2/3"} {
		if _, err := probeOwner(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	// Three shares cover every id exactly once.
	var owners [3]func(string) bool
	for i := range owners {
		owners[i], _ = probeOwner(strconv.Itoa(i) + "/3")
	}
	for i := range 300 {
		id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		n := 0
		for _, o := range owners {
			if o(id) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%s owned by %d instances", id, n)
		}
	}
}
