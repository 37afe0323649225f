package events_test

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// linkOf is what ParseLink must read of a decoded event.
func linkOf(e domain.Event) (domain.EventType, string, domain.ChainLink, bool) {
	terminal := false
	switch d := e.Payload.(type) {
	case domain.RefreshFailed:
		terminal = d.Terminal
	case domain.AccessRejected:
		terminal = d.Terminal
	}
	return e.Type(), e.ConnectionID, e.Link, terminal
}

// agree checks ParseLink against Decode on one message: whatever ParseLink
// reads, Decode accepts, with the same type, connection, link and terminal
// flag. It reports whether ParseLink read it.
func agree(t *testing.T, what string, b []byte) bool {
	t.Helper()
	var l events.LinkInfo
	ok := events.ParseLink(b, &l)
	e, err := events.Decode(b)
	if !ok {
		return false
	}
	if err != nil {
		t.Fatalf("%s: ParseLink reads a message Decode refuses (%v): %s", what, err, b)
	}
	typ, conn, link, terminal := linkOf(e)
	link.Hash = events.HashOf(b)
	if l.Type != typ || string(l.Subject) != conn || l.Link != link || l.Terminal != terminal {
		t.Fatalf("%s: ParseLink read %s %s %+v terminal=%v; Decode %s %s %+v terminal=%v", what, l.Type, l.Subject, l.Link, l.Terminal, typ, conn, link, terminal)
	}
	return true
}

// ParseLink reads every event type as Encode writes it (chained or not,
// terminal or not), and agrees with Decode on them, on the stored examples
// of the wire format, and on 20,000 single-byte corruptions of them: it never
// reads a message Decode refuses, and reads the same link as Decode.
func TestParseLinkAgreesWithDecode(t *testing.T) {
	var msgs [][]byte
	files, _ := filepath.Glob("testdata/*/*.json")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		agree(t, f, b)
		msgs = append(msgs, b)
	}
	for _, m := range history(t, 3, connA, connB) {
		if !agree(t, "history", m.data) {
			t.Fatalf("ParseLink does not read an event Encode wrote: %s", m.data)
		}
		msgs = append(msgs, m.data)
	}
	for _, f := range files { // each stored example, re-encoded canonically and chained
		b, _ := os.ReadFile(f)
		e, err := events.Decode(b)
		if err != nil {
			continue // an older version: upcast, re-encoded below as current
		}
		events.Chain(&e, domain.ChainHead{Hash: [32]byte{7}})
		c := encode(t, e)
		if !agree(t, f+" re-encoded", c) {
			t.Fatalf("ParseLink does not read %s as Encode writes it: %s", f, c)
		}
		msgs = append(msgs, c)
	}
	r := rand.New(rand.NewPCG(1, 2))
	read := 0
	for i := range 20000 {
		m := msgs[i%len(msgs)]
		b := append([]byte(nil), m...)
		const alphabet = " \"{}[],:0123456789abcdeftrunl\\x\xff"
		b[r.IntN(len(b))] = alphabet[r.IntN(len(alphabet))]
		if agree(t, "corrupted", b) {
			read++
		}
	}
	t.Logf("%d of 20000 corrupted messages still read (and decoded alike)", read)
}

// FuzzParseLink: whatever bytes the stream holds, ParseLink never panics,
// and what it reads Decode accepts with the same type, connection, link and
// terminal flag (verify checks links on the bytes ParseLink reads).
func FuzzParseLink(f *testing.F) {
	files, _ := filepath.Glob("testdata/*/*.json")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		agree(t, "fuzzed message", b)
	})
}
