package domain

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Detection: which answers of a provider's API say that a connection's
// access token is dead. The rules are pure data judged by
// DetectionRules.Judge; the lifecycle (reported rejections, probes) and the
// RoundTripper apply the same rules.

// MaxRejectionBody is how many bytes of a rejected answer's body the rules
// read (error bodies are small; 16 KiB also fits, escaped, in an API
// request). A body rule never matches a longer body (a JSON document cut
// short cannot be read).
const MaxRejectionBody = 16 << 10

// Limits of DetectionRules (Validate).
const (
	MaxDetectionRules  = 16
	MaxBodyMatchFields = 8
)

// Verdict is what an API answer says about the access token it carried.
type Verdict int

const (
	// VerdictNone: the answer says nothing about the token.
	VerdictNone Verdict = iota
	// VerdictInsufficientScope: the token is valid but the grant is too
	// narrow (Bearer error="insufficient_scope"); recorded only.
	VerdictInsufficientScope
	// VerdictDead: the access token is dead (revoked, expired, or the grant
	// is gone): the connection refreshes once and, if that cannot restore
	// access, goes unauthenticated.
	VerdictDead
)

func (v Verdict) String() string {
	switch v {
	case VerdictDead:
		return "dead"
	case VerdictInsufficientScope:
		return "insufficient_scope"
	}
	return "none"
}

// DetectionRule is a provider's own way of saying "this token is dead": an
// answer with Status (any 100-599, e.g. 403, or 200 and 400 for providers
// that answer with an error body) is dead if Body is empty or every one of
// Body's fields matches the answer's JSON body.
type DetectionRule struct {
	Status int
	// Body maps a field of the JSON body (a dotted path into nested
	// objects: "error" or "error.code") to the value it must have, compared
	// as text: a string without its quotes, a number, true, false or null
	// as written ("false" matches false and "false").
	Body map[string]string
}

// DetectionRules are a provider's rules. The zero value is the default:
//
//   - any answer whose Bearer challenge (WWW-Authenticate) has
//     error="invalid_token" is dead, whatever its status;
//   - an answer whose Bearer challenge has error="insufficient_scope" is
//     VerdictInsufficientScope (recorded only), whatever the rules say;
//   - a 401 is dead unless its Bearer challenge names another error (a 401
//     without a challenge, or with a challenge without an error, is dead);
//   - then the provider's Rules, in order: the first that matches makes the
//     answer dead;
//   - anything else is VerdictNone.
type DetectionRules struct {
	Rules []DetectionRule
}

// Validate checks the rules' shape.
func (r DetectionRules) Validate() error {
	if len(r.Rules) > MaxDetectionRules {
		return fmt.Errorf("%d detection rules, at most %d", len(r.Rules), MaxDetectionRules)
	}
	for i, d := range r.Rules {
		if d.Status < 100 || d.Status > 599 {
			return fmt.Errorf("rule %d: status %d is not an HTTP status (100-599)", i, d.Status)
		}
		if d.Status >= 200 && d.Status < 300 && len(d.Body) == 0 {
			return fmt.Errorf("rule %d: a %d rule needs a body match (every successful answer would condemn the token)", i, d.Status)
		}
		if len(d.Body) > MaxBodyMatchFields {
			return fmt.Errorf("rule %d: %d body fields, at most %d", i, len(d.Body), MaxBodyMatchFields)
		}
		for f, v := range d.Body {
			if f == "" || len(f) > 128 || strings.HasPrefix(f, ".") || strings.HasSuffix(f, ".") || strings.Contains(f, "..") {
				return fmt.Errorf("rule %d: body field %q: a field name or a dotted path (error, error.code), at most 128 bytes", i, f)
			}
			if len(v) > 256 {
				return fmt.Errorf("rule %d: body field %s: the value is longer than 256 bytes", i, f)
			}
		}
	}
	return nil
}

// NeedsBody reports whether judging an answer with this status may read
// its body (a rule with a body match names the status).
func (r DetectionRules) NeedsBody(status int) bool {
	for _, d := range r.Rules {
		if d.Status == status && len(d.Body) > 0 {
			return true
		}
	}
	return false
}

// Judge says what an answer (status, WWW-Authenticate values, at most
// MaxRejectionBody bytes of body) says about the token it carried. It also
// returns the error code to record: the Bearer challenge's error, else
// "invalid_token" for a dead answer, else "".
func (r DetectionRules) Judge(status int, wwwAuthenticate []string, body []byte) (Verdict, string) {
	code, _, bearer := BearerError(wwwAuthenticate...)
	switch {
	case code == "invalid_token":
		return VerdictDead, code
	case code == "insufficient_scope":
		return VerdictInsufficientScope, code
	case status == 401 && (!bearer || code == ""):
		return VerdictDead, "invalid_token"
	}
	for _, d := range r.Rules {
		if d.Status == status && d.matches(body) {
			return VerdictDead, "invalid_token"
		}
	}
	return VerdictNone, code
}

// matches reports whether body satisfies the rule's body match.
func (d DetectionRule) matches(body []byte) bool {
	if len(d.Body) == 0 {
		return true
	}
	if len(body) == 0 || len(body) > MaxRejectionBody {
		return false
	}
	// Fast refusal without decoding: a value that JSON writes as is must
	// appear in the body (a successful answer rarely holds the error word),
	// unless the body escapes characters as \uXXXX.
	if !bytes.Contains(body, []byte(`\u`)) {
		for _, want := range d.Body {
			if plainJSON(want) && !bytes.Contains(body, []byte(want)) {
				return false
			}
		}
	}
	var doc any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if dec.Decode(&doc) != nil {
		return false
	}
	for path, want := range d.Body {
		v, ok := lookupJSON(doc, path)
		if !ok || v != want {
			return false
		}
	}
	return true
}

// plainJSON reports whether JSON writes v unescaped (printable ASCII
// without '"', '\\' or '/').
func plainJSON(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '/' {
			return false
		}
	}
	return true
}

// lookupJSON returns the scalar at a dotted path as text.
func lookupJSON(doc any, path string) (string, bool) {
	for _, k := range strings.Split(path, ".") {
		m, ok := doc.(map[string]any)
		if !ok {
			return "", false
		}
		if doc, ok = m[k]; !ok {
			return "", false
		}
	}
	switch v := doc.(type) {
	case string:
		return v, true
	case json.Number:
		return v.String(), true
	case bool:
		return strconv.FormatBool(v), true
	case nil:
		return "null", true
	}
	return "", false
}

// ProbeAnswer is what a probe learned about a connection's grant.
type ProbeAnswer struct {
	// Introspected: the answer is an RFC 7662 introspection's; Active is
	// its "active" member.
	Introspected bool
	Active       bool
	// Otherwise the answer is an authenticated GET's: its status, its
	// WWW-Authenticate values and at most MaxRejectionBody bytes of its
	// body, judged by the provider's DetectionRules.
	Status          int
	WWWAuthenticate []string
	Body            []byte
}

// Prober asks a provider whether a grant is still alive, without
// changing anything at the provider (RFC 7662 introspection of the refresh
// token, or a cheap authenticated GET with the access token). An error is
// a failed probe (network, 5xx, a malformed answer), never a verdict; it
// must not contain a token.
type Prober interface {
	Probe(ctx context.Context, t Tokens) (ProbeAnswer, error)
	// Every is the probe interval of the provider's connections.
	Every() time.Duration
}
