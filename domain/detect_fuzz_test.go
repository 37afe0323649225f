package domain

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzJudgeBody: for any answer body, a body rule's verdict is what decoding
// the whole body and comparing each field says: the fast refusal that skips
// decoding never refuses a body that matches (escapes, numbers, nesting,
// duplicate keys), and Judge never panics.
func FuzzJudgeBody(f *testing.F) {
	for _, s := range []string{
		`{"ok":false,"error":"invalid_auth"}`, `{"ok":"false","error":"invalid_auth"}`,
		`{"ok":false,"error":"invalid\u005fauth"}`, `{"error":{"code":401,"type":"auth"}}`,
		`{"error":{"code":4.01e2,"type":"auth"}}`, `{"ok":false,"ok":true,"error":"invalid_auth"}`,
		`[]`, `null`, ``, `{"error":"invalid_auth"} trailing`, `{"a":{"b":{"c":null}}}`,
	} {
		f.Add(s)
	}
	rules := DetectionRules{Rules: []DetectionRule{
		{Status: 200, Body: map[string]string{"ok": "false", "error": "invalid_auth"}},
		{Status: 200, Body: map[string]string{"error.code": "401", "error.type": "auth"}},
		{Status: 200, Body: map[string]string{"a.b.c": "null"}},
	}}
	if err := rules.Validate(); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body string) {
		got, _ := rules.Judge(200, nil, []byte(body))
		want := VerdictNone
		var doc any
		dec := json.NewDecoder(bytes.NewReader([]byte(body)))
		dec.UseNumber()
		if len(body) > 0 && len(body) <= MaxRejectionBody && dec.Decode(&doc) == nil {
			for _, r := range rules.Rules {
				all := true
				for path, v := range r.Body {
					if s, ok := lookupJSON(doc, path); !ok || s != v {
						all = false
					}
				}
				if all {
					want = VerdictDead
					break
				}
			}
		}
		if got != want {
			t.Fatalf("Judge(200, %q) = %v, decoding says %v", body, got, want)
		}
	})
}
