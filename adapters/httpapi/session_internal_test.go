package httpapi

import (
	"strings"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestLoginCodeSingleUse(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)}
	s := newSecretSet(MaxLoginCodes, LoginCodeTTL, clk.now)
	code, exp := s.issue()
	if len(code) != 43 || strings.ContainsAny(code, "+/=") || !exp.Equal(clk.t.Add(LoginCodeTTL)) {
		t.Fatalf("code %q (%d chars) expires %v", code, len(code), exp)
	}
	other, _ := s.issue()
	if other == code {
		t.Fatal("two codes are equal")
	}
	for _, bad := range []string{"", code[:42], code + "x", strings.ToUpper(code), strings.Repeat("a", 300)} {
		if s.find(bad, true) {
			t.Errorf("code %q accepted", bad)
		}
	}
	if !s.find(code, true) {
		t.Fatal("fresh code refused")
	}
	if s.find(code, true) || s.find(code, false) {
		t.Fatal("a code worked twice")
	}
	if !s.find(other, false) || s.len() != 1 {
		t.Fatalf("using one code disturbed another (live %d)", s.len())
	}
}

func TestLoginCodeAndSessionExpire(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)}
	codes := newSecretSet(MaxLoginCodes, LoginCodeTTL, clk.now)
	sessions := newSecretSet(MaxSessions, SessionTTL, clk.now)
	code, _ := codes.issue()
	sid, _ := sessions.issue()
	clk.t = clk.t.Add(LoginCodeTTL - time.Nanosecond)
	if !codes.find(code, false) {
		t.Fatal("code refused before its expiry")
	}
	clk.t = clk.t.Add(time.Nanosecond)
	if codes.find(code, true) || codes.len() != 0 {
		t.Fatal("code accepted at its expiry")
	}
	if !sessions.find(sid, false) {
		t.Fatal("session ended with the code's lifetime")
	}
	clk.t = clk.t.Add(SessionTTL - LoginCodeTTL)
	if sessions.find(sid, false) || sessions.len() != 0 {
		t.Fatal("session outlived SessionTTL")
	}
}

func TestSessionsAreCapped(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)}
	s := newSecretSet(MaxSessions, SessionTTL, clk.now)
	ids := make([]string, MaxSessions+5)
	for i := range ids {
		ids[i], _ = s.issue()
		clk.t = clk.t.Add(time.Second)
	}
	if n := s.len(); n != MaxSessions {
		t.Fatalf("%d live sessions, want the cap %d", n, MaxSessions)
	}
	for i, id := range ids {
		if want := i >= 5; s.find(id, false) != want {
			t.Errorf("session %d live %v, want %v (the oldest go first)", i, !want, want)
		}
	}
}

func TestUINext(t *testing.T) {
	for in, want := range map[string]string{
		"":                      "/ui/",
		"/ui/connections/x":     "/ui/connections/x",
		"/ui/?a=b":              "/ui/?a=b",
		"https://evil.example/": "/ui/",
		"//evil.example/ui/":    "/ui/",
		"/ui//evil.example":     "/ui/",
		"/\\evil.example":       "/ui/",
		"/ui/../v1/connections": "/ui/",
		"/v1/connections":       "/ui/",
		"javascript:alert(1)":   "/ui/",
	} {
		if got := uiNext(in); got != want {
			t.Errorf("uiNext(%q) = %q, want %q", in, got, want)
		}
	}
}
