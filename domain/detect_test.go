package domain_test

import (
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
)

func TestDetectionRulesJudge(t *testing.T) {
	slack := domain.DetectionRules{Rules: []domain.DetectionRule{
		{Status: 200, Body: map[string]string{"ok": "false", "error": "invalid_auth"}},
		{Status: 200, Body: map[string]string{"ok": "false", "error": "token_revoked"}},
	}}
	forbidden := domain.DetectionRules{Rules: []domain.DetectionRule{{Status: 403}}}
	bad := domain.DetectionRules{Rules: []domain.DetectionRule{{Status: 400, Body: map[string]string{"error.code": "401", "error.type": "auth"}}}}
	def := domain.DetectionRules{}
	bearerInvalid := []string{`Bearer error="invalid_token"`}
	scope := []string{`Bearer error="insufficient_scope", scope="a:b"`}
	for _, c := range []struct {
		name   string
		rules  domain.DetectionRules
		status int
		www    []string
		body   string
		want   domain.Verdict
		code   string
	}{
		{"401 bare", def, 401, nil, "", domain.VerdictDead, "invalid_token"},
		{"401 basic challenge", def, 401, []string{`Basic realm="x"`}, "", domain.VerdictDead, "invalid_token"},
		{"401 bearer no error", def, 401, []string{`Bearer realm="api"`}, "", domain.VerdictDead, "invalid_token"},
		{"401 invalid_token", def, 401, bearerInvalid, "", domain.VerdictDead, "invalid_token"},
		{"401 invalid_request", def, 401, []string{`Bearer error="invalid_request"`}, "", domain.VerdictNone, "invalid_request"},
		{"401 insufficient_scope", def, 401, scope, "", domain.VerdictInsufficientScope, "insufficient_scope"},
		{"403 invalid_token by default", def, 403, bearerInvalid, "", domain.VerdictDead, "invalid_token"},
		{"400 invalid_token by default", def, 400, bearerInvalid, "", domain.VerdictDead, "invalid_token"},
		{"403 {} by default", def, 403, nil, "{}", domain.VerdictNone, ""},
		{"403 insufficient_scope", def, 403, scope, "", domain.VerdictInsufficientScope, "insufficient_scope"},
		{"403 {} with rule", forbidden, 403, nil, "{}", domain.VerdictDead, "invalid_token"},
		{"403 insufficient_scope with rule stays scope", forbidden, 403, scope, "", domain.VerdictInsufficientScope, "insufficient_scope"},
		{"403 other challenge with rule", forbidden, 403, []string{`Bearer error="invalid_request"`}, "", domain.VerdictDead, "invalid_token"},
		{"404 with 403 rule", forbidden, 404, nil, "", domain.VerdictNone, ""},
		{"200 ok", slack, 200, nil, `{"ok":true}`, domain.VerdictNone, ""},
		{"200 invalid_auth", slack, 200, nil, `{"ok":false,"error":"invalid_auth"}`, domain.VerdictDead, "invalid_token"},
		{"200 token_revoked", slack, 200, nil, `{"error":"token_revoked","ok":false,"x":[1]}`, domain.VerdictDead, "invalid_token"},
		{"200 ok as string", slack, 200, nil, `{"ok":"false","error":"invalid_auth"}`, domain.VerdictDead, "invalid_token"},
		{"200 escaped value", slack, 200, nil, `{"ok":false,"error":"invalid\u005fauth"}`, domain.VerdictDead, "invalid_token"},
		{"200 other error", slack, 200, nil, `{"ok":false,"error":"ratelimited"}`, domain.VerdictNone, ""},
		{"200 field missing", slack, 200, nil, `{"error":"invalid_auth"}`, domain.VerdictNone, ""},
		{"200 not json", slack, 200, nil, `ok=false&error=invalid_auth`, domain.VerdictNone, ""},
		{"200 empty", slack, 200, nil, ``, domain.VerdictNone, ""},
		{"200 array", slack, 200, nil, `[{"ok":false,"error":"invalid_auth"}]`, domain.VerdictNone, ""},
		{"200 nested object is not a scalar", slack, 200, nil, `{"ok":false,"error":{"x":1}}`, domain.VerdictNone, ""},
		{"200 too long", slack, 200, nil, `{"ok":false,"error":"invalid_auth","pad":"` + strings.Repeat("x", domain.MaxRejectionBody) + `"}`, domain.VerdictNone, ""},
		{"400 nested number", bad, 400, nil, `{"error":{"code":401,"type":"auth"}}`, domain.VerdictDead, "invalid_token"},
		{"400 nested other", bad, 400, nil, `{"error":{"code":400,"type":"auth"}}`, domain.VerdictNone, ""},
		{"400 path through scalar", bad, 400, nil, `{"error":"auth"}`, domain.VerdictNone, ""},
		{"500 default", def, 500, nil, "", domain.VerdictNone, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			v, code := c.rules.Judge(c.status, c.www, []byte(c.body))
			if v != c.want || code != c.code {
				t.Fatalf("Judge(%d, %q, %.40q) = %s %q, want %s %q", c.status, c.www, c.body, v, code, c.want, c.code)
			}
		})
	}
}

func TestDetectionRulesValidate(t *testing.T) {
	ok := domain.DetectionRules{Rules: []domain.DetectionRule{{Status: 403}, {Status: 200, Body: map[string]string{"error": "invalid_auth"}}}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]domain.DetectionRule{
		"status 0":         {Status: 0},
		"status 600":       {Status: 600},
		"200 without body": {Status: 200},
		"empty field":      {Status: 400, Body: map[string]string{"": "x"}},
		"dotted edge":      {Status: 400, Body: map[string]string{"error.": "x"}},
		"double dot":       {Status: 400, Body: map[string]string{"a..b": "x"}},
		"value too long":   {Status: 400, Body: map[string]string{"a": strings.Repeat("x", 257)}},
		"too many fields":  {Status: 400, Body: map[string]string{"a": "", "b": "", "c": "", "d": "", "e": "", "f": "", "g": "", "h": "", "i": ""}},
	} {
		if err := (domain.DetectionRules{Rules: []domain.DetectionRule{r}}).Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if !ok.NeedsBody(200) || ok.NeedsBody(403) || ok.NeedsBody(401) {
		t.Fatal("NeedsBody")
	}
}

// A dead answer with a status other than 401/403 is accepted by Decide
// (error code invalid_token) and, against the token a rejection-triggered
// refresh issued, is terminal like a 401; other statuses are refused.
func TestDecideRejectAccessStatuses(t *testing.T) {
	h := toActive(t)
	for _, m := range []domain.RejectAccess{{HTTPStatus: 200}, {HTTPStatus: 400, ErrorCode: "invalid_request"}, {HTTPStatus: 700, ErrorCode: "invalid_token"}} {
		if _, err := domain.Decide(&h.c, m); err == nil {
			t.Fatalf("%+v accepted", m)
		}
	}
	old := h.c.Tokens.AccessTokenFP
	if p := h.mustExec(t, domain.RejectAccess{HTTPStatus: 200, ErrorCode: "invalid_token", AccessTokenFP: old}); p.(domain.AccessRejected).Terminal {
		t.Fatal("first dead answer terminal")
	}
	h.mustExec(t, domain.StartRefresh{LeaseUntil: h.now.Add(time.Minute), Trigger: domain.TriggerAccessRejected})
	h.mustExec(t, domain.SucceedRefresh{Tokens: tokenInfo(2, h.now), Rotated: true})
	// A 403 without invalid_token is not dead: recorded.
	if p := h.mustExec(t, domain.RejectAccess{HTTPStatus: 403, AccessTokenFP: h.c.Tokens.AccessTokenFP}); p.(domain.AccessRejected).Terminal {
		t.Fatal("403 without invalid_token terminal")
	}
	p := h.mustExec(t, domain.RejectAccess{HTTPStatus: 403, ErrorCode: "invalid_token", AccessTokenFP: h.c.Tokens.AccessTokenFP})
	if ar := p.(domain.AccessRejected); !ar.Terminal || ar.Reason != domain.ReasonAccessTokenRejected || h.c.State != domain.StateUnauthenticated {
		t.Fatalf("%+v %s", ar, h.c.State)
	}
}
