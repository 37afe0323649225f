package events_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// stored is a message as the stream holds it.
type stored struct {
	seq  uint64
	conn string
	data []byte
}

const connA, connB = "2f9c4a4e-6a55-4c0e-a8a5-7f0b3f1a2c3d", "7d1e0b5a-0c3f-4d2b-9d6e-1a2b3c4d5e6f"

// history appends n events per connection, alternating, as the store does:
// each linked to its connection's previous event.
func history(t *testing.T, n int, conns ...string) []stored {
	heads := map[string]domain.ChainHead{}
	var out []stored
	for i := range n {
		for _, c := range conns {
			var p domain.Payload = domain.ConnectionUpdated{Config: map[string]string{"i": fmt.Sprint(i)}}
			if i == 0 {
				p = domain.ConnectionCreated{Provider: "pleo", Scopes: []string{"users:read"}}
			}
			e := domain.Event{ID: fmt.Sprintf("e-%s-%d", c[:4], i), ConnectionID: c, Time: at0.Add(time.Duration(i) * time.Second), Payload: p}
			events.Chain(&e, heads[c])
			b := encode(t, e)
			seq := uint64(len(out) + 1)
			heads[c] = domain.ChainHead{Seq: seq, Hash: events.HashOf(b), Chained: true}
			out = append(out, stored{seq, c, b})
		}
	}
	return out
}

// renumber gives messages the sequences a rewritten stream gives them.
func renumber(ms []stored) []stored {
	for i := range ms {
		ms[i].seq = uint64(i + 1)
	}
	return ms
}

// checkpoint signs the heads of the messages up to and including upto.
func checkpoint(t *testing.T, key ed25519.PrivateKey, number uint64, prev [32]byte, ms []stored, upto uint64) ([]byte, [32]byte) {
	heads := map[string]events.CheckpointHead{}
	var dec events.Decoder
	for _, m := range ms[:upto] {
		if _, err := dec.Decode(m.data); err == nil {
			heads[m.conn] = events.CheckpointHead{Connection: m.conn, Seq: m.seq, Head: events.FormatHash(events.HashOf(m.data))}
		}
	}
	c := events.Checkpoint{Number: number, Prev: events.FormatHash(prev), Stream: "TOKENLINE", UpTo: upto, Time: at0}
	for _, id := range []string{connA, connB} {
		if h, ok := heads[id]; ok {
			c.Heads = append(c.Heads, h)
		}
	}
	b, h, err := events.SignCheckpoint(c, key)
	if err != nil {
		t.Fatal(err)
	}
	return b, h
}

// run verifies ms twice, from the decoded events (Verifier.Event) and from
// their links (Verifier.Link, as `tokenline verify` reads the stream), and
// panics unless both give the same report.
func run(pub ed25519.PublicKey, only string, cps [][]byte, ms []stored, last uint64) events.VerifyReport {
	v, vl := events.NewVerifier(pub, only), events.NewVerifier(pub, only)
	for _, c := range cps {
		v.Checkpoint(c)
		vl.Checkpoint(c)
	}
	var dec events.Decoder
	for _, m := range ms {
		rec := events.Record{Seq: m.seq, Subject: events.Subject(m.conn)}
		rec.Event, rec.Err = dec.Decode(m.data)
		rec.Event.Seq = m.seq
		v.Event(&rec)
		lr := events.LinkRecord{Seq: m.seq}
		if lr.Light = events.ParseLink(m.data, &lr.Info) && string(lr.Info.Subject) == m.conn; !lr.Light {
			lr.Record = rec
		}
		vl.Link(&lr)
	}
	rep, lrep := v.Finish(last), vl.Finish(last)
	if !reflect.DeepEqual(rep, lrep) {
		panic(fmt.Sprintf("the link check disagrees with the verifier on decoded events:\n%+v\n%+v", lrep, rep))
	}
	return rep
}

func newKey(t *testing.T) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func reencode(t *testing.T, data []byte, edit func(*domain.Event)) []byte {
	e, err := events.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	edit(&e)
	return encode(t, e)
}

func TestHashFormat(t *testing.T) {
	if events.GenesisHash != "sha256:"+strings.Repeat("0", 64) {
		t.Fatal(events.GenesisHash)
	}
	h := events.HashOf([]byte("x"))
	if got, ok := events.ParseHash(events.FormatHash(h)); !ok || got != h {
		t.Fatal("hash does not round-trip")
	}
	for _, bad := range []string{"", "sha256:", "sha1:" + strings.Repeat("0", 64), "sha256:" + strings.Repeat("A", 64), "sha256:" + strings.Repeat("0", 63)} {
		if _, ok := events.ParseHash(bad); ok {
			t.Errorf("%q parsed", bad)
		}
		env := fmt.Sprintf(`{"specversion":"1.0","id":"x","source":"/tokenline","type":"tokenline.connection.deleted","subject":%q,"time":"2026-11-28T10:02:13Z","datacontenttype":"application/json","schemaversion":1,"prevhash":%q,"data":{}}`, connA, bad)
		var dec events.Decoder
		if _, err := dec.Decode([]byte(env)); err == nil && bad != "" {
			t.Errorf("event with prevhash %q decoded", bad)
		}
	}
}

// The fast decoder and Decode agree on the link; an event without
// prevhash decodes as unchained (before the chain).
func TestLinkDecodes(t *testing.T) {
	ms := history(t, 2, connA)
	var dec events.Decoder
	for i, m := range ms {
		fast, err1 := dec.Decode(m.data)
		slow, err2 := events.Decode(m.data)
		if err1 != nil || err2 != nil || fast.Link != slow.Link || !fast.Link.Chained || fast.Link.Hash != events.HashOf(m.data) {
			t.Fatalf("event %d: fast %+v slow %+v (%v %v)", i, fast.Link, slow.Link, err1, err2)
		}
	}
	legacy := encode(t, sampleEvent(domain.ConnectionDeleted{}))
	if strings.Contains(string(legacy), "prevhash") {
		t.Fatalf("unchained event written with prevhash: %s", legacy)
	}
	if e, err := dec.Decode(legacy); err != nil || e.Link.Chained {
		t.Fatalf("legacy event: %+v %v", e.Link, err)
	}
}

func TestVerifyIntactHistory(t *testing.T) {
	key := newKey(t)
	ms := history(t, 5, connA, connB)
	cp1, h1 := checkpoint(t, key, 1, [32]byte{}, ms, 6)
	cp2, _ := checkpoint(t, key, 2, h1, ms, 10)
	rep := run(key.Public().(ed25519.PublicKey), "", [][]byte{cp1, cp2}, ms, 10)
	if len(rep.Breaks) != 0 || rep.Events != 10 || rep.Connections != 2 || rep.Checkpoints != 2 || !rep.KeyPinned {
		t.Fatalf("%+v", rep)
	}
	// Without a pinned key the checkpoints' own key is used, and named.
	rep = run(nil, "", [][]byte{cp1, cp2}, ms, 10)
	if len(rep.Breaks) != 0 || rep.KeyPinned || rep.Key != events.FormatKey(key.Public().(ed25519.PublicKey)) {
		t.Fatalf("%+v", rep)
	}
}

// History written before the chain stays readable: reported, not a break,
// and the first chained event links to its last event.
func TestBeforeTheChain(t *testing.T) {
	var ms []stored
	var dec events.Decoder
	for i, p := range []domain.Payload{domain.ConnectionCreated{Provider: "pleo"}, domain.ConnectionUpdated{Config: map[string]string{"a": "1"}}} {
		e := domain.Event{ID: fmt.Sprint("old-", i), ConnectionID: connA, Time: at0, Payload: p}
		ms = append(ms, stored{uint64(i + 1), connA, encode(t, e)})
	}
	e := domain.Event{ID: "new", ConnectionID: connA, Time: at0, Payload: domain.ConnectionUpdated{Config: map[string]string{"a": "2"}}}
	events.Chain(&e, domain.ChainHead{Hash: events.HashOf(ms[1].data)})
	ms = append(ms, stored{3, connA, encode(t, e)})
	rep := run(nil, "", nil, ms, 3)
	if len(rep.Breaks) != 0 || rep.BeforeChain != 2 {
		t.Fatalf("%+v", rep)
	}
	// Once the chain began, an unchained event is a break.
	late := sampleEvent(domain.ConnectionDeleted{})
	late.ConnectionID = connA
	ms = append(ms, stored{4, connA, encode(t, late)})
	rep = run(nil, "", nil, ms, 4)
	if len(rep.Breaks) != 1 || rep.Breaks[0].Seq != 4 || !strings.Contains(rep.Breaks[0].Detail, "no prevhash") {
		t.Fatalf("%+v", rep.Breaks)
	}
	_ = dec
}

// Every kind of change is reported at the first event it breaks.
func TestVerifyEachBreak(t *testing.T) {
	key := newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	// 2 connections x 5 events: seq 1..10, A at odd, B at even sequences.
	// A checkpoint covers seq 1..6 (heads A@5, B@6).
	base := func() []stored { return history(t, 5, connA, connB) }
	cps := func(ms []stored) [][]byte { b, _ := checkpoint(t, key, 1, [32]byte{}, ms, 6); return [][]byte{b} }
	cases := []struct {
		name   string
		tamper func(ms []stored) ([]stored, [][]byte)
		kind   string
		seq    uint64
		detail string
	}{
		{"an event altered (its successor breaks)", func(ms []stored) ([]stored, [][]byte) {
			c := cps(ms)
			ms[2].data = reencode(t, ms[2].data, func(e *domain.Event) { e.Actor = "user" })
			return ms, c
		}, events.BreakChain, 5, "the event before it was altered or removed"},
		{"the signed head altered", func(ms []stored) ([]stored, [][]byte) {
			c := cps(ms)
			ms[4].data = reencode(t, ms[4].data, func(e *domain.Event) { e.Actor = "user" })
			return ms, c
		}, events.BreakCheckpointSeq, 5, "not the one the checkpoint signed"},
		{"an event inserted without a link", func(ms []stored) ([]stored, [][]byte) {
			c := cps(ms)
			forged := stored{conn: connA, data: encode(t, domain.Event{ID: "forged", ConnectionID: connA, Time: at0, Actor: "user", Payload: domain.ConnectionDeleted{}})}
			return renumber(append(ms[:7:7], append([]stored{forged}, ms[7:]...)...)), c
		}, events.BreakChain, 8, "no prevhash"},
		{"an event inserted with a made-up link", func(ms []stored) ([]stored, [][]byte) {
			c := cps(ms)
			e := domain.Event{ID: "forged", ConnectionID: connA, Time: at0, Actor: "user", Payload: domain.ConnectionDeleted{}, Link: domain.ChainLink{Prev: [32]byte{9}, Chained: true}}
			return append(ms, stored{11, connA, encode(t, e)}), c
		}, events.BreakChain, 11, "hash of no event"},
		{"an event inserted with a correct link", func(ms []stored) ([]stored, [][]byte) {
			c := cps(ms)
			e := domain.Event{ID: "forged", ConnectionID: connA, Time: at0, Actor: "user", Payload: domain.ConnectionUpdated{Config: map[string]string{"redirect_uri": "https://evil"}}}
			events.Chain(&e, domain.ChainHead{Hash: events.HashOf(ms[6].data)})
			return renumber(append(ms[:7:7], append([]stored{{conn: connA, data: encode(t, e)}}, ms[7:]...)...)), c
		}, events.BreakChain, 10, "were inserted"},
		{"an event removed from the middle", func(ms []stored) ([]stored, [][]byte) {
			c := cps(ms)
			return append(ms[:2:2], ms[3:]...), c // seqs kept: the store reports stored sequences
		}, events.BreakChain, 5, "altered or removed"},
		{"two events reordered", func(ms []stored) ([]stored, [][]byte) {
			c := cps(ms)
			ms[6].data, ms[8].data = ms[8].data, ms[6].data
			return ms, c
		}, events.BreakChain, 7, ""},
		{"the tail cut after a checkpoint", func(ms []stored) ([]stored, [][]byte) {
			return ms[:4], cps(ms)
		}, events.BreakTailCut, 4, "tail was cut"},
		{"a consistent chain rewritten under a checkpoint", func(ms []stored) ([]stored, [][]byte) {
			c := cps(ms)
			ms[0].data = reencode(t, ms[0].data, func(e *domain.Event) { e.Actor = "user" })
			head := events.HashOf(ms[0].data)
			for i := 2; i < len(ms); i += 2 {
				ms[i].data = reencode(t, ms[i].data, func(e *domain.Event) { e.Link.Prev = head })
				head = events.HashOf(ms[i].data)
			}
			return ms, c
		}, events.BreakCheckpointSeq, 5, "not the one the checkpoint signed"},
		{"a checkpoint forged", func(ms []stored) ([]stored, [][]byte) {
			c := cps(ms)
			var sc events.SignedCheckpoint
			_ = json.Unmarshal(c[0], &sc)
			sc.Statement = []byte(strings.Replace(string(sc.Statement), `"upto":6`, `"upto":2`, 1))
			c[0], _ = json.Marshal(sc)
			return ms, c
		}, events.BreakCheckpoint, 0, "signature does not verify"},
		{"a checkpoint removed", func(ms []stored) ([]stored, [][]byte) {
			b1, h1 := checkpoint(t, key, 1, [32]byte{}, ms, 4)
			_, h2 := checkpoint(t, key, 2, h1, ms, 6)
			b3, _ := checkpoint(t, key, 3, h2, ms, 8)
			return ms, [][]byte{b1, b3}
		}, events.BreakCheckpoint, 0, "were removed"},
		{"a checkpoint signed by another key", func(ms []stored) ([]stored, [][]byte) {
			b, _ := checkpoint(t, newKey(t), 1, [32]byte{}, ms, 6)
			return ms, [][]byte{b}
		}, events.BreakCheckpoint, 0, "signature does not verify"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ms, cps := tc.tamper(base())
			last := uint64(0)
			if len(ms) > 0 {
				last = ms[len(ms)-1].seq
			}
			rep := run(pub, "", cps, ms, last)
			if len(rep.Breaks) == 0 {
				t.Fatal("not detected")
			}
			b := rep.Breaks[0]
			if b.Kind != tc.kind || b.Seq != tc.seq || !strings.Contains(b.Detail, tc.detail) {
				t.Fatalf("first break: %v\nwant %s at seq %d with %q\nall: %v", b, tc.kind, tc.seq, tc.detail, rep.Breaks)
			}
		})
	}
}

// The fold agrees with the verifier: Apply refuses an event that breaks
// the chain and leaves the connection unchanged.
func TestApplyRefusesABrokenLink(t *testing.T) {
	ms := history(t, 2, connA)
	var c domain.Connection
	var dec events.Decoder
	for _, m := range ms {
		e, _ := dec.Decode(m.data)
		e.Seq = m.seq
		if err := c.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	forged := domain.Event{ID: "f", ConnectionID: connA, Time: at0, Seq: 3, Payload: domain.ConnectionDeleted{}}
	before := c.Clone()
	for _, link := range []domain.ChainLink{{}, {Chained: true}, {Prev: [32]byte{1}, Chained: true}} {
		forged.Link = link
		if err := c.Apply(forged); err == nil || c.Deleted || c.Version != before.Version {
			t.Fatalf("link %+v: applied (%v)", link, err)
		}
	}
}
