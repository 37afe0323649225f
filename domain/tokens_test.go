package domain_test

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
)

const (
	secretAccess  = "eyJhbGciOiJIUzI1NiJ9.ACCESS-SECRET-9f8e7d"
	secretRefresh = "REFRESH-SECRET-1a2b3c4d"
)

func secretTokens() domain.Tokens {
	return domain.Tokens{
		AccessToken:  secretAccess,
		RefreshToken: secretRefresh,
		TokenType:    "Bearer",
		Expiry:       t0.Add(time.Hour),
		Scopes:       []string{"expenses:read"},
	}
}

func assertNoSecret(t *testing.T, what, out string) {
	t.Helper()
	for _, secret := range []string{secretAccess, secretRefresh, "ACCESS-SECRET", "REFRESH-SECRET"} {
		if strings.Contains(out, secret) {
			t.Errorf("%s leaks a token: %s", what, out)
			return
		}
	}
}

func TestTokensNeverPrinted(t *testing.T) {
	tok := secretTokens()
	type holder struct {
		Name   string
		Tokens domain.Tokens
		Ptr    *domain.Tokens
	}
	values := map[string]any{
		"value":   tok,
		"pointer": &tok,
		"struct":  holder{Name: "x", Tokens: tok, Ptr: &tok},
		"slice":   []domain.Tokens{tok},
		"map":     map[string]domain.Tokens{"k": tok},
		"error":   fmt.Errorf("refresh failed for %v", tok),
	}
	verbs := []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%t", "%T", "%10.3v", "%-20s"}
	for name, v := range values {
		for _, verb := range verbs {
			assertNoSecret(t, fmt.Sprintf("Sprintf(%q, %s)", verb, name), fmt.Sprintf(verb, v))
		}
		assertNoSecret(t, "Sprint("+name+")", fmt.Sprint(v))
		assertNoSecret(t, "Sprintln("+name+")", fmt.Sprintln(v))
	}
	// The redaction is visible, not an empty string.
	if got := fmt.Sprintf("%v", tok); !strings.Contains(got, "REDACTED") {
		t.Errorf("%%v = %q, want a visible redaction", got)
	}
	var buf bytes.Buffer
	log.New(&buf, "", 0).Printf("tokens %v %+v %s", tok, &tok, tok)
	assertNoSecret(t, "log.Printf", buf.String())
}

func TestTokensNeverMarshalled(t *testing.T) {
	tok := secretTokens()
	for name, v := range map[string]any{
		"value":   tok,
		"pointer": &tok,
		"struct":  struct{ T domain.Tokens }{tok},
		"slice":   []domain.Tokens{tok, tok},
	} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json.Marshal(%s): %v", name, err)
		}
		assertNoSecret(t, "json.Marshal("+name+")", string(b))
		b, _ = json.MarshalIndent(v, "", "  ")
		assertNoSecret(t, "json.MarshalIndent("+name+")", string(b))
	}
	b, _ := json.Marshal(tok)
	if string(b) != `"[REDACTED]"` {
		t.Errorf("json.Marshal(Tokens) = %s", b)
	}
	// Encoders that look for encoding.TextMarshaler (map keys, XML
	// attributes, YAML) get the redaction too.
	if tm, ok := any(tok).(encoding.TextMarshaler); ok {
		text, _ := tm.MarshalText()
		assertNoSecret(t, "MarshalText", string(text))
	}
}

func TestTokensNeverLogged(t *testing.T) {
	tok := secretTokens()
	var jsonBuf, textBuf bytes.Buffer
	for _, h := range []slog.Handler{
		slog.NewJSONHandler(&jsonBuf, &slog.HandlerOptions{Level: slog.LevelDebug}),
		slog.NewTextHandler(&textBuf, &slog.HandlerOptions{Level: slog.LevelDebug}),
	} {
		l := slog.New(h).With("conn", connID)
		l.Info("tokens", "tokens", tok, "ptr", &tok)
		l.Debug("nested", slog.Any("holder", struct {
			T domain.Tokens
			N int
		}{tok, 1}))
		l.Error("failed", "err", fmt.Errorf("with %v", tok), slog.Group("g", "tokens", tok))
		l.With("tokens", tok).WithGroup("grp").Warn("with", "t", tok)
	}
	assertNoSecret(t, "slog JSON", jsonBuf.String())
	assertNoSecret(t, "slog text", textBuf.String())
	// Every line is valid JSON and the field shows the redaction.
	lines := strings.Split(strings.TrimSpace(jsonBuf.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d JSON log lines, want 4", len(lines))
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatalf("log line is not JSON: %v: %s", err, lines[0])
	}
	if first["tokens"] != "[REDACTED]" || first["ptr"] != "[REDACTED]" {
		t.Errorf("logged tokens = %v, %v, want [REDACTED]", first["tokens"], first["ptr"])
	}
}

// Info, which events and the aggregate hold, carries fingerprints only.
func TestTokenInfoHoldsNoSecret(t *testing.T) {
	tok := secretTokens()
	info := tok.Info()
	if info.AccessTokenFP != domain.Fingerprint(secretAccess) || info.RefreshTokenFP != domain.Fingerprint(secretRefresh) {
		t.Fatalf("Info fingerprints %+v", info)
	}
	if !info.AccessTokenExpiresAt.Equal(tok.Expiry) || info.AccessTokenExpiresAt.Location() != time.UTC {
		t.Errorf("Info expiry %v", info.AccessTokenExpiresAt)
	}
	b, _ := json.Marshal(domain.AuthorisationCompleted{AttemptID: "a", Tokens: info})
	assertNoSecret(t, "authorisation.completed JSON", string(b))
	assertNoSecret(t, "TokenInfo %+v", fmt.Sprintf("%+v %#v", info, info))
}

var fpRE = regexp.MustCompile(`^sha256:[0-9a-f]{12}$`)

func TestFingerprint(t *testing.T) {
	if got := domain.Fingerprint(""); got != "" {
		t.Errorf(`Fingerprint("") = %q, want ""`, got)
	}
	// sha256("abc") = ba7816bf8f01cfea414140de5dae2223...
	if got := domain.Fingerprint("abc"); got != "sha256:ba7816bf8f01" {
		t.Errorf(`Fingerprint("abc") = %q, want sha256:ba7816bf8f01`, got)
	}
	seen := map[string]string{}
	for _, s := range []string{secretAccess, secretRefresh, "a", "b", "ab", "abc", "abd", " ", strings.Repeat("x", 10000), "é"} {
		fp := domain.Fingerprint(s)
		if len(fp) != 19 || !fpRE.MatchString(fp) {
			t.Errorf("Fingerprint(%.10q) = %q: want sha256: and 12 lowercase hex digits", s, fp)
		}
		if fp != domain.Fingerprint(s) {
			t.Errorf("Fingerprint(%.10q) is not stable", s)
		}
		if other, dup := seen[fp]; dup {
			t.Errorf("Fingerprint(%.10q) = Fingerprint(%.10q) = %s", s, other, fp)
		}
		seen[fp] = s
		if strings.Contains(fp, s) && len(s) > 2 {
			t.Errorf("fingerprint %s contains the secret", fp)
		}
	}
}

func TestGateErrorHoldsNoToken(t *testing.T) {
	err := error(&domain.GateError{ConnectionID: connID, State: domain.StateUnauthenticated, Reason: domain.ReasonInvalidGrant, Detail: "unauthenticated"})
	if !errors.Is(err, domain.ErrUnauthenticated) {
		t.Errorf("GateError is not ErrUnauthenticated")
	}
	if msg := err.Error(); !strings.Contains(msg, "invalid_grant") || !strings.Contains(msg, connID) {
		t.Errorf("GateError message %q lacks reason or connection", msg)
	}
}
