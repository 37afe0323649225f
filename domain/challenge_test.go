package domain_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/tokenline/tokenline/domain"
)

// p builds a Params map from name, value pairs.
func p(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func TestParseChallenges(t *testing.T) {
	for _, c := range []struct {
		name string
		in   []string
		want []domain.Challenge
	}{
		{"the lifecycle/roundtrip disagreement: a quoted comma is not a separator",
			[]string{`Bearer error="insufficient_scope", error_description="x,error=invalid_token"`},
			[]domain.Challenge{{Scheme: "bearer", Params: p("error", "insufficient_scope", "error_description", "x,error=invalid_token")}}},
		{"quoted commas and equals, escaped quotes and backslashes",
			[]string{`Bearer realm="a=b, c", error_description="say \"hi\" \\ \x"`},
			[]domain.Challenge{{Scheme: "bearer", Params: p("realm", "a=b, c", "error_description", `say "hi" \ x`)}}},
		{"two challenges in one value",
			[]string{`Basic realm="x", Bearer error="invalid_token"`},
			[]domain.Challenge{{Scheme: "basic", Params: p("realm", "x")}, {Scheme: "bearer", Params: p("error", "invalid_token")}}},
		{"two header values, case-insensitive names",
			[]string{`Basic realm="x"`, `BEARER Error=invalid_token, SCOPE="a:b c:d"`},
			[]domain.Challenge{{Scheme: "basic", Params: p("realm", "x")}, {Scheme: "bearer", Params: p("error", "invalid_token", "scope", "a:b c:d")}}},
		{"token68 and a scheme alone",
			[]string{`Negotiate YIIB+g/x==, NTLM, Bearer`},
			[]domain.Challenge{{Scheme: "negotiate", Token68: "YIIB+g/x=="}, {Scheme: "ntlm"}, {Scheme: "bearer"}}},
		{"RFC 9110 example with BWS and empty list elements",
			[]string{`, Newauth realm="apps" , type = 1,, title="Login to \"apps\"", Basic realm="simple",`},
			[]domain.Challenge{{Scheme: "newauth", Params: p("realm", "apps", "type", "1", "title", `Login to "apps"`)}, {Scheme: "basic", Params: p("realm", "simple")}}},
		{"first occurrence of a duplicate wins",
			[]string{`Bearer error="insufficient_scope", error="invalid_token"`},
			[]domain.Challenge{{Scheme: "bearer", Params: p("error", "insufficient_scope")}}},
		{"control bytes inside a quoted-string are kept for the sanitiser",
			[]string{"Bearer error=\"bad\x01\""},
			[]domain.Challenge{{Scheme: "bearer", Params: p("error", "bad\x01")}}},
		{"unterminated quoted-string: the parameters before it survive",
			[]string{`Bearer realm="r", error="invalid_token`},
			[]domain.Challenge{{Scheme: "bearer", Params: p("realm", "r")}}},
		{"garbage after a parameter stops the value",
			[]string{`Bearer error="invalid_token" scope="x", Basic realm="y"`, `Digest realm="z"`},
			[]domain.Challenge{{Scheme: "bearer", Params: p("error", "invalid_token")}, {Scheme: "digest", Params: p("realm", "z")}}},
		{"garbage", []string{`"Bearer error=invalid_token"`, `=,=`, "\x00Bearer", `Bearer"x"`}, nil},
		{"a token value running into a quote is dropped, its challenge kept",
			[]string{`Bearer error=invalid_token"`}, []domain.Challenge{{Scheme: "bearer"}}},
		{"nothing", []string{"", " , ,"}, nil},
		{"no values", nil, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := domain.ParseChallenges(c.in...)
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("ParseChallenges(%q)\n got %#v\nwant %#v", c.in, got, c.want)
			}
		})
	}
}

func TestBearerError(t *testing.T) {
	long := strings.Repeat("s", domain.MaxScopeBytes+10)
	for _, c := range []struct {
		in          []string
		code, scope string
		ok          bool
	}{
		{[]string{`Bearer error="insufficient_scope", error_description="x,error=invalid_token"`}, "insufficient_scope", "", true},
		{[]string{`Basic realm="x", Bearer error="invalid_token"`}, "invalid_token", "", true},
		{[]string{`Basic realm="x"`, `bearer realm="pleo",error="insufficient_scope",scope="accounts:write users:read"`}, "insufficient_scope", "accounts:write users:read", true},
		{[]string{`Bearer`}, "", "", true},
		{[]string{"Bearer error=\"bad\x01\""}, "invalid_error_code", "", true},
		{[]string{`Bearer error="a\"b"`}, "invalid_error_code", "", true},
		{[]string{`Bearer scope="` + long + `"`}, "", long[:domain.MaxScopeBytes], true},
		{[]string{`Basic realm="x"`}, "", "", false},
		{[]string{""}, "", "", false},
		{nil, "", "", false},
	} {
		code, scope, ok := domain.BearerError(c.in...)
		if code != c.code || scope != c.scope || ok != c.ok {
			t.Errorf("BearerError(%.80q) = %q, %.20q, %v; want %q, %.20q, %v", c.in, code, scope, ok, c.code, c.scope, c.ok)
		}
	}
}

func TestParseChallengesLimits(t *testing.T) {
	// More challenges than MaxChallenges: the first ones are kept.
	many := strings.Repeat("Basic realm=x, ", domain.MaxChallenges+5) + `Bearer error="invalid_token"`
	if got := domain.ParseChallenges(many); len(got) != domain.MaxChallenges {
		t.Fatalf("%d challenges, want %d", len(got), domain.MaxChallenges)
	}
	if _, _, ok := domain.BearerError(many); ok {
		t.Fatal("a challenge past MaxChallenges was read")
	}
	// More parameters than MaxChallengeParams: the first ones are kept and
	// the next challenge is still found.
	var b strings.Builder
	b.WriteString("Foo ")
	for i := range domain.MaxChallengeParams + 5 {
		b.WriteString("p" + strings.Repeat("x", i) + "=1, ")
	}
	b.WriteString(`Bearer error="invalid_token"`)
	got := domain.ParseChallenges(b.String())
	if len(got) != 2 || len(got[0].Params) != domain.MaxChallengeParams || got[1].Params["error"] != "invalid_token" {
		t.Fatalf("params limit: %d challenges, %v", len(got), got)
	}
	// A value cut by MaxChallengeBytes never yields a truncated parameter.
	pad := `Bearer realm="` + strings.Repeat("r", domain.MaxChallengeBytes-len(`Bearer realm="", error=invalid`)) + `", error=invalid_token`
	got = domain.ParseChallenges(pad)
	if len(got) != 1 || got[0].Params["error"] != "" || len(got[0].Params) != 1 {
		t.Fatalf("cut token value: %v", got[0].Params["error"])
	}
	// The budget is shared by all values.
	got = domain.ParseChallenges(strings.Repeat("x", domain.MaxChallengeBytes), `Bearer error="invalid_token"`)
	if len(got) != 1 || got[0].Scheme != strings.Repeat("x", domain.MaxChallengeBytes) {
		t.Fatalf("budget over values: %d challenges", len(got))
	}
}

// serialise writes challenges back as one WWW-Authenticate value, quoting
// every parameter value.
func serialise(cs []domain.Challenge) string {
	var parts []string
	for _, c := range cs {
		s := c.Scheme
		if c.Token68 != "" {
			s += " " + c.Token68
		} else if len(c.Params) > 0 {
			names := make([]string, 0, len(c.Params))
			for k := range c.Params {
				names = append(names, k)
			}
			slices.Sort(names)
			for i, k := range names {
				sep := ", "
				if i == 0 {
					sep = " "
				}
				s += sep + k + `="` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(c.Params[k]) + `"`
			}
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

func FuzzParseChallenges(f *testing.F) {
	for _, s := range []string{
		`Bearer error="insufficient_scope", error_description="x,error=invalid_token"`,
		`Basic realm="x", Bearer error="invalid_token"`,
		`Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple"`,
		`Negotiate YIIB+g/x==, NTLM`,
		`Bearer realm="r", error="invalid_token`,
		"Bearer error=\"bad\x01\", scope=\"a\\\\b\"",
		`, ,Bearer ,error = x ,, scope="a b"`,
		`=,"`,
	} {
		f.Add(s, `Bearer realm="second"`)
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		cs := domain.ParseChallenges(a, b)
		if len(cs) > domain.MaxChallenges {
			t.Fatalf("%d challenges", len(cs))
		}
		total := 0
		for _, c := range cs {
			if c.Scheme == "" || c.Scheme != strings.ToLower(c.Scheme) {
				t.Fatalf("scheme %q", c.Scheme)
			}
			if c.Token68 != "" && c.Params != nil {
				t.Fatal("token68 and params")
			}
			if len(c.Params) > domain.MaxChallengeParams || c.Params != nil && len(c.Params) == 0 {
				t.Fatalf("%d params", len(c.Params))
			}
			total += len(c.Scheme) + len(c.Token68)
			for k, v := range c.Params {
				if k == "" || k != strings.ToLower(k) {
					t.Fatalf("param name %q", k)
				}
				total += len(k) + len(v)
			}
		}
		if total > domain.MaxChallengeBytes {
			t.Fatalf("output of %d bytes", total)
		}

		// Idempotent on a re-serialisation (when it fits the budget).
		if s := serialise(cs); len(s) <= domain.MaxChallengeBytes {
			if again := domain.ParseChallenges(s); !reflect.DeepEqual(again, cs) {
				t.Fatalf("re-parse of %q\n got %#v\nwant %#v", s, again, cs)
			}
		}

		// The Bearer helper agrees with ParseChallenges.
		code, scope, ok := domain.BearerError(a, b)
		var bearer *domain.Challenge
		for i := range cs {
			if cs[i].Scheme == "bearer" {
				bearer = &cs[i]
				break
			}
		}
		if ok != (bearer != nil) {
			t.Fatalf("BearerError ok=%v, challenges %v", ok, cs)
		}
		if bearer != nil {
			wantScope := bearer.Params["scope"]
			if len(wantScope) > domain.MaxScopeBytes {
				wantScope = wantScope[:domain.MaxScopeBytes]
			}
			if code != domain.SafeErrorCode(bearer.Params["error"]) || scope != wantScope {
				t.Fatalf("BearerError = %q %q, challenge %v", code, scope, bearer.Params)
			}
		} else if code != "" || scope != "" {
			t.Fatalf("no Bearer challenge but %q %q", code, scope)
		}
	})
}
