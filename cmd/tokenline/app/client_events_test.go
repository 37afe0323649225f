package app

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/events"
)

// events tail prints what the stream stored, not what was published: a
// message JetStream refused (here: a failed expected-sequence check, as a
// lost append race is) is never printed. And it escapes control characters:
// an event cannot drive the terminal.
func TestEventsTailStoredOnlyAndEscaped(t *testing.T) {
	srv := natstest.Start(t, "")
	nc := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := jsstore.Open(ctx, nc, jsstore.Config{}); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	envelope := func(evID, provider string) []byte {
		return []byte(`{"specversion":"1.0","id":"` + evID + `","source":"tokenline/test","type":"tokenline.connection.created",` +
			`"subject":"` + id + `\u001b[2J","time":"2026-12-02T03:00:00Z","datacontenttype":"application/json",` +
			`"data":{"provider":"` + provider + `","scopes":["a"]}}`)
	}
	c := &cli{t: t}
	for _, asJSON := range []bool{false, true} {
		args := []string{"--nats-url", srv.ClientURL()}
		if asJSON {
			args = append(args, "--json")
		}
		out, stop := c.startTail(t, "Tailing tokenline.conn.>", args...)

		// Refused by JetStream: subscribers on the subject see it, the stream does not keep it.
		lost := nats.NewMsg(events.Subject(id))
		lost.Data = envelope("lost-race", "never-stored")
		lost.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "999")
		if _, err := js.PublishMsg(ctx, lost); err == nil {
			t.Fatal("the stream stored a message with a wrong expected sequence")
		}
		// Stored, with control characters: ESC and BEL (JSON escapes), and
		// a raw C1 CSI and a right-to-left override.
		if _, err := js.Publish(ctx, events.Subject(id), envelope("stored", `sand\u001b]0;pwned\u0007box`+"\u009b31m\u202e")); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the stored event", func() bool { return strings.Contains(out.String(), "sand") })
		if err := stop(); err != nil {
			t.Fatalf("tail: %v", err)
		}
		text := out.String()
		t.Logf("json=%v:\n%s", asJSON, text)
		if strings.Contains(text, "never-stored") || strings.Count(strings.TrimSpace(text), "\n") != 0 {
			t.Errorf("tail printed a message the stream did not store:\n%s", text)
		}
		if i := strings.IndexFunc(text, func(r rune) bool { return r != '\n' && isControl(r) }); i >= 0 {
			t.Errorf("tail printed a raw control character at %d: %q", i, text)
		}
		if asJSON {
			var ev struct{ Subject string }
			if err := json.Unmarshal([]byte(text), &ev); err != nil || ev.Subject != id+"\x1b[2J" {
				t.Errorf("--json line is not the same JSON: %v, subject %q", err, ev.Subject)
			}
		} else if !strings.Contains(text, id+`\x1b[2J`) || !strings.Contains(text, `\x1b]0;pwned`) || !strings.Contains(text, `\u202e`) {
			t.Errorf("control characters not shown escaped:\n%s", text)
		}
	}
}

func TestEscapeControls(t *testing.T) {
	for in, want := range map[string]string{
		"plain é ✓":         "plain é ✓",
		"a\x1b[31mb":        `a\x1b[31mb`,
		"tab\there\r\n":     `tab\x09here\x0d\x0a`,
		"del\x7f":           `del\x7f`,
		"c1\u009b":          `c1\u009b`,
		"rtl\u202eabc":      `rtl\u202eabc`,
		"bad\xffutf8":       `bad\xffutf8`,
		"isolate\u2066x":    `isolate\u2066x`,
		"replacement\ufffd": "replacement\ufffd",
	} {
		if got := escapeControls(in); got != want {
			t.Errorf("escapeControls(%q) = %q, want %q", in, got, want)
		}
	}
}
