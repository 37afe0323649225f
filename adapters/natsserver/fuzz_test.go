package natsserver

import (
	"strings"
	"testing"
)

// FuzzRedactURLs checks that a list of NATS URLs with user information is
// printed without its passwords, and that scrub removes them from a message
// that quotes them, whatever the URLs look like.
func FuzzRedactURLs(f *testing.F) {
	f.Add("tokenline", "pa55word-x", "127.0.0.1:4222", "nats://127.0.0.1:4223")
	f.Add("", "tok3n-only", "[::1]:4222/%zz", "")
	f.Add("u", "p@ss-word", "h:1,nats://v:w0rdword@h2:2", "tls://x")
	f.Fuzz(func(t *testing.T, user, pass, host, other string) {
		if len(pass) < 6 || strings.ContainsAny(pass, "@,/ ?#") || strings.Contains(host+other+user, pass) || strings.Contains("redacted", pass) ||
			strings.Contains(host, "@") || strings.ContainsAny(user, ":@/?#") { // an @ in the host, a : in the user: the password would be another string

			return
		}
		userinfo := pass
		if user != "" {
			userinfo = user + ":" + pass
		}
		list := "nats://" + userinfo + "@" + host + "," + other
		if out := redactURLs(list); strings.Contains(out, pass) {
			t.Fatalf("redactURLs(%q) = %q keeps the password", list, out)
		}
		msg := "dial " + list + " failed: nats: authorization violation for " + pass
		if out := scrub(msg, list); strings.Contains(out, pass) {
			t.Fatalf("scrub kept the password: %q", out)
		}
	})
}
