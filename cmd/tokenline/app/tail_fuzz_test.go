package app

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzTailEscape checks the tail printer's escaping on arbitrary event
// text: the text form carries no rune a terminal acts on and is valid
// UTF-8 (text without such runes is printed unchanged); the JSON form stays
// valid JSON that means what the event's JSON meant.
func FuzzTailEscape(f *testing.F) {
	for _, s := range []string{"plain", "\x1b[31mred\x1b[0m", "a\u202eb", "\xff\xfe", "tab\there", "\u0085next", "\u2066iso\u2069", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := escapeControls(s)
		if !utf8.ValidString(out) {
			t.Fatalf("escapeControls(%q) = %q is not UTF-8", s, out)
		}
		if strings.ContainsFunc(out, isControl) {
			t.Fatalf("escapeControls(%q) = %q keeps a control character", s, out)
		}
		if utf8.ValidString(s) && !strings.ContainsFunc(s, isControl) && out != s {
			t.Fatalf("escapeControls changed %q into %q", s, out)
		}

		js, err := json.Marshal(map[string]string{"v": s})
		if err != nil {
			t.Fatal(err)
		}
		esc := escapeControlsJSON(string(js))
		if strings.ContainsFunc(esc, isControl) {
			t.Fatalf("escapeControlsJSON(%s) = %s keeps a control character", js, esc)
		}
		var before, after map[string]string
		if err := json.Unmarshal(js, &before); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(esc), &after); err != nil {
			t.Fatalf("escapeControlsJSON(%s) = %s is not JSON: %v", js, esc, err)
		}
		if before["v"] != after["v"] {
			t.Fatalf("escapeControlsJSON changed the meaning: %q -> %q", before["v"], after["v"])
		}
	})
}
