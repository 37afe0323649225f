package events

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/domain"
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
		domain.RefreshLeaseExtended{LeaseUntil: at.Add(time.Duration(1 + rng.Int64N(1e12)))},
	}
}

func TestFastDecodeAgrees(t *testing.T) {
	if len(fastTypes) != len(domain.EventTypes) {
		t.Fatalf("fast decoder covers %d of %d event types: has a payload or schema version changed?", len(fastTypes), len(domain.EventTypes))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	seen := map[domain.EventType]int{}
	in := &interner{}
	for i := 0; i < 300; i++ {
		for _, p := range samplePayloads(rng) {
			e := domain.Event{ID: uuid.NewString(), ConnectionID: uuid.NewString(), Time: t0.Add(time.Duration(i) * time.Millisecond), Actor: []string{"", "instance/api-1"}[i%2], Payload: p}
			b, err := Encode(e)
			if err != nil {
				t.Fatal(err)
			}
			want, werr := Decode(b)
			got, ok := fastDecodeWith(b, in)
			if werr != nil {
				if ok {
					t.Fatalf("fast path accepted what Decode refuses (%v): %s", werr, b)
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

// Non-canonical but valid envelopes go through Decode.
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
		if _, ok := fastDecodeWith([]byte(c), nil); ok {
			t.Errorf("fast path accepted non-canonical %s", c)
		}
		want, werr := Decode([]byte(c))
		got, gerr := new(Decoder).Decode([]byte(c))
		if (werr == nil) != (gerr == nil) || !reflect.DeepEqual(got, want) {
			t.Errorf("Decoder.Decode(%s) = %v, %v; Decode = %v, %v", c, got, gerr, want, werr)
		}
	}
}

func FuzzFastDecode(f *testing.F) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, p := range samplePayloads(rng) {
		b, _ := Encode(domain.Event{ID: "e1", ConnectionID: "2f9c4a4e-6a55-4c0e-a8a5-7f0b3f1a2c3d", Time: t0, Actor: "a", Payload: p})
		f.Add(b)
	}
	in := &interner{}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := fastDecodeWith(b, in)
		if !ok {
			return
		}
		want, err := Decode(b)
		if err != nil {
			t.Fatalf("fast path accepted what Decode refuses (%v): %q", err, b)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("differs:\n got %#v\nwant %#v", got, want)
		}
	})
}

// BenchmarkDecoder compares Decode with a Decoder over a realistic mix of
// every event type, and prints both: the fast path must stay clearly faster
// to justify its code (it is removed otherwise).
func BenchmarkDecoder(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	var msgs [][]byte
	for i := range 64 {
		for _, p := range samplePayloads(rng) {
			e := domain.Event{ID: uuid.NewString(), ConnectionID: uuid.NewString(), Time: t0.Add(time.Duration(i) * time.Second), Actor: "instance/api-1", Payload: p}
			m, err := Encode(e)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := Decode(m); err == nil {
				msgs = append(msgs, m)
			}
		}
	}
	res := map[string]float64{}
	allocs := map[string]float64{}
	run := func(name string, decode func([]byte) (domain.Event, error)) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			before := ms.Mallocs
			i := 0
			for b.Loop() {
				if _, err := decode(msgs[i]); err != nil {
					b.Fatal(err)
				}
				if i++; i == len(msgs) {
					i = 0
				}
			}
			runtime.ReadMemStats(&ms)
			res[name] = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			allocs[name] = float64(ms.Mallocs-before) / float64(b.N)
		})
	}
	run("Decode", Decode)
	var d Decoder
	run("Decoder", d.Decode)
	fmt.Printf("decoding %d events of every type: Decode %.0f ns/event (%.1f allocs), Decoder %.0f ns/event (%.1f allocs): %.1fx faster\n",
		len(msgs), res["Decode"], allocs["Decode"], res["Decoder"], allocs["Decoder"], res["Decode"]/res["Decoder"])
}

// t0 is a fixed instant for sample events (no dependence on the calendar).
var t0 = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
