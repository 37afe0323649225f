package client

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzRedactURL checks that RedactURL never hands back the password or the
// user of a URL's user information, whether or not the URL parses.
func FuzzRedactURL(f *testing.F) {
	f.Add("alice", "s3cret-pass", "127.0.0.1:8080/v1")
	f.Add("alice", "s3cret-pass", "127.0.0.1:8080/%zz")
	f.Add("", "tok-en-value", "[::1]:80/")
	f.Add("a%zz", "s3cret-pass", "host")
	f.Fuzz(func(t *testing.T, user, pass, rest string) {
		if len(pass) < 6 || strings.ContainsAny(pass, "@/?#") || strings.Contains(rest, pass) || strings.Contains(user, pass) ||
			strings.ContainsAny(rest+user, "@/?#") { // those would move the user information boundary

			return
		}
		raw := "http://" + user + ":" + pass + "@" + rest
		out := RedactURL(raw)
		if strings.Contains(out, pass) {
			t.Fatalf("RedactURL(%q) = %q keeps the password", raw, out)
		}
		if u, err := url.Parse(raw); err == nil && u.User != nil {
			if p, ok := u.User.Password(); ok && len(p) >= 6 && strings.Contains(out, p) {
				t.Fatalf("RedactURL(%q) = %q keeps the parsed password", raw, out)
			}
		}
	})
}
