package projections

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// samplePayloads returns payloads of every type with fields set from rng.
func samplePayloads(rng *rand.Rand) []domain.Payload {
	at := t0.Add(time.Duration(rng.Int64N(int64(1000 * time.Hour))))
	str := func(prefix string) string {
		if rng.IntN(4) == 0 {
			return ""
		}
		return fmt.Sprintf("%s-%d-é✓", prefix, rng.IntN(1000))
	}
	scopes := func() []string {
		switch rng.IntN(4) {
		case 0:
			return nil
		case 1:
			return []string{}
		}
		return []string{"expenses:read", str("s")}
	}
	cfg := func() map[string]string {
		switch rng.IntN(3) {
		case 0:
			return nil
		case 1:
			return map[string]string{}
		}
		return map[string]string{"team": str("t"), "k": "v"}
	}
	tm := func() time.Time {
		if rng.IntN(4) == 0 {
			return time.Time{}
		}
		return at.Add(time.Duration(rng.Int64N(1e12)))
	}
	ti := domain.TokenInfo{AccessTokenFP: domain.Fingerprint(str("a")), RefreshTokenFP: str("r"), AccessTokenExpiresAt: tm(), Scopes: scopes()}
	reason := domain.Reasons[rng.IntN(len(domain.Reasons))].Reason
	return []domain.Payload{
		domain.ConnectionCreated{Provider: "pleo" + str(""), Scopes: scopes(), Config: cfg()},
		domain.AuthorisationStarted{AttemptID: str("att"), Scopes: scopes(), ExpiresAt: tm()},
		domain.AuthorisationCompleted{AttemptID: str("att"), Tokens: ti},
		domain.AuthorisationFailed{AttemptID: str("att"), Reason: reason, ErrorCode: str("e"), Description: str("d")},
		domain.RefreshStarted{Attempt: rng.IntN(10), LeaseUntil: tm(), Trigger: str("tr"), RefreshTokenFP: str("r")},
		domain.RefreshSucceeded{Attempt: rng.IntN(10), Tokens: ti, Rotated: rng.IntN(2) == 0},
		domain.RefreshFailed{Terminal: true, Class: "terminal", ErrorCode: str("e"), HTTPStatus: 400, Attempt: 1, Reason: reason},
		domain.RefreshFailed{Class: "transient", ErrorCode: str("e"), HTTPStatus: rng.IntN(600), Attempt: rng.IntN(5), RetryAt: tm()},
		domain.AccessRejected{HTTPStatus: 401, ErrorCode: str("e"), Scope: str("s"), AccessTokenFP: str("a"), Terminal: rng.IntN(2) == 0, Reason: reason},
		domain.TokensInvalidated{Reason: reason, AccessTokenFP: str("a"), RefreshTokenFP: str("r"), ProviderRevoked: rng.IntN(2) == 0},
		domain.ConnectionUpdated{Scopes: scopes(), Config: cfg()},
		domain.ConnectionDeleted{},
	}
}

func TestFastDecodeAgrees(t *testing.T) {
	if len(fastTypes) != len(domain.EventTypes) {
		t.Fatalf("fast decoder covers %d of %d event types: has a payload or schema version changed?", len(fastTypes), len(domain.EventTypes))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	seen := map[domain.EventType]int{}
	in := newInterner()
	for i := 0; i < 300; i++ {
		for _, p := range samplePayloads(rng) {
			e := domain.Event{ID: uuid.NewString(), ConnectionID: uuid.NewString(), Time: t0.Add(time.Duration(i) * time.Millisecond), Actor: []string{"", "instance/api-1"}[i%2], Payload: p}
			b, err := events.Encode(e)
			if err != nil {
				t.Fatal(err)
			}
			want, werr := events.Decode(b)
			got, ok := fastDecodeWith(b, in)
			if werr != nil {
				if ok {
					t.Fatalf("fast path accepted what events.Decode refuses (%v): %s", werr, b)
				}
				continue
			}
			if !ok {
				t.Fatalf("fast path refused canonical %s", b)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("fast decode differs:\n got %#v\nwant %#v\n%s", got, want, b)
			}
			seen[e.Type()]++
		}
	}
	for _, typ := range domain.EventTypes {
		if seen[typ] == 0 {
			t.Errorf("no %s decoded by the fast path", typ)
		}
	}
}

// Non-canonical but valid envelopes go through events.Decode.
func TestFastDecodeFallsBack(t *testing.T) {
	id, conn := uuid.NewString(), uuid.NewString()
	cases := []string{
		`{"specversion":"1.0","id":"` + id + `","source":"/x","type":"tokenline.connection.created","subject":"` + conn + `","time":"2026-01-01T00:00:00Z","datacontenttype":"application/json","schemaversion":1,"data":{"provider":"p\u0041"}}`,
		`{"specversion":"1.0","id":"` + id + `","type":"tokenline.connection.created","subject":"` + conn + `","time":"2026-01-01T00:00:00Z","schemaversion":1,"extra":1,"data":{"provider":"p"}}`,
		`{"specversion":"1.0","id":"` + id + `","type":"tokenline.refresh.failed","subject":"` + conn + `","time":"2026-01-01T00:00:00Z","schemaversion":1,"data":{"terminal":true,"code":"invalid_grant","status":400}}`,
		`{"data":{"provider":"p"},"specversion":"1.0","id":"` + id + `","type":"tokenline.connection.created","subject":"` + conn + `","time":"2026-01-01T00:00:00Z","schemaversion":1}`,
		`{"specversion":"1.0","ID":"` + id + `","type":"tokenline.connection.created","subject":"` + conn + `","time":"2026-01-01T00:00:00Z","schemaversion":1,"data":{"provider":"p"}}`,
	}
	for _, c := range cases {
		if _, ok := fastDecode([]byte(c)); ok {
			t.Errorf("fast path accepted non-canonical %s", c)
		}
		want, werr := events.Decode([]byte(c))
		got, gerr := decodeEvent([]byte(c))
		if (werr == nil) != (gerr == nil) || !reflect.DeepEqual(got, want) {
			t.Errorf("decodeEvent(%s) = %v, %v; events.Decode = %v, %v", c, got, gerr, want, werr)
		}
	}
}

func FuzzFastDecode(f *testing.F) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, p := range samplePayloads(rng) {
		b, _ := events.Encode(domain.Event{ID: "e1", ConnectionID: "2f9c4a4e-6a55-4c0e-a8a5-7f0b3f1a2c3d", Time: t0, Actor: "a", Payload: p})
		f.Add(b)
	}
	in := newInterner()
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := fastDecodeWith(b, in)
		if !ok {
			return
		}
		want, err := events.Decode(b)
		if err != nil {
			t.Fatalf("fast path accepted what events.Decode refuses (%v): %q", err, b)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("differs:\n got %#v\nwant %#v", got, want)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	tok := domain.Tokens{AccessToken: "a", RefreshToken: "b", Expiry: t0.Add(time.Hour), Scopes: []string{"users:read", "expenses:read"}}
	data, _ := events.Encode(domain.Event{ID: uuid.NewString(), ConnectionID: uuid.NewString(), Time: t0, Actor: "instance/api-1",
		Payload: domain.RefreshSucceeded{Attempt: 1, Tokens: tok.Info(), Rotated: true}})
	b.Run("events.Decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			events.Decode(data)
		}
	})
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		in := newInterner()
		for b.Loop() {
			if _, err := decodeEventWith(data, in); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestAckInfo(t *testing.T) {
	for _, c := range []struct {
		reply string
		seq   uint64
		ts    int64
		ok    bool
	}{
		{"$JS.ACK.TOKENLINE.cons.1.42.7.1750000000123456789.0", 42, 1750000000123456789, true},
		{"$JS.ACK._.ABCDEF.TOKENLINE.cons.1.43.8.1750000000123456789.5.XyZ", 43, 1750000000123456789, true},
		{"$JS.ACK.hub.ABCDEF.TOKENLINE.cons.1.44.8.1750000000123456789.5", 44, 1750000000123456789, true},
		{"$JS.ACK.TOKENLINE.cons.1.x.7.1.0", 0, 0, false},
		{"_INBOX.abc", 0, 0, false},
		{"$JS.ACK.a.b.c", 0, 0, false},
	} {
		seq, ts, ok := ackInfo(c.reply)
		if seq != c.seq || ts != c.ts || ok != c.ok {
			t.Errorf("ackInfo(%q) = %d %d %v", c.reply, seq, ts, ok)
		}
	}
}
