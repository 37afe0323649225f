package events

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// fastEncoderCases returns payloads of every event type: full, empty, and
// with the strings, maps, slices and times whose encoding has rules of its
// own (escaping, nil against empty, sorted keys, zones, nanoseconds).
func fastEncoderCases() []domain.Payload {
	at := time.Date(2026, 12, 2, 5, 1, 2, 345678900, time.UTC)
	zoned := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", -(3*3600+30*60)))
	odd := "a<b>&\"q\"\\ \b\f\n\r\t\x00\x1f\x7f é \u2028 \u2029 \xff\xfe 日本"
	ti := domain.TokenInfo{AccessTokenFP: "sha256:0123456789ab", RefreshTokenFP: "sha256:ba9876543210", AccessTokenExpiresAt: at, Scopes: []string{"users:read", "expenses:write"}}
	return []domain.Payload{
		domain.ConnectionCreated{Provider: "pleo", Scopes: []string{"users:read"}, Config: map[string]string{"team": "finance", "a": odd, "authorize.x": "1", odd: "k"}},
		domain.ConnectionCreated{Provider: odd},
		domain.ConnectionCreated{Provider: "p", Scopes: []string{}, Config: map[string]string{}},
		domain.AuthorisationStarted{AttemptID: "att_1", Scopes: []string{"a", odd}, ExpiresAt: at},
		domain.AuthorisationStarted{},
		domain.AuthorisationStarted{ExpiresAt: zoned, Scopes: []string{}},
		domain.AuthorisationCompleted{AttemptID: "att_1", Tokens: ti},
		domain.AuthorisationCompleted{},
		domain.AuthorisationCompleted{Tokens: domain.TokenInfo{Scopes: []string{}, AccessTokenExpiresAt: zoned}},
		domain.AuthorisationFailed{AttemptID: "att_1", Reason: domain.ReasonAuthorisationDenied, ErrorCode: "access_denied", Description: odd},
		domain.AuthorisationFailed{},
		domain.RefreshStarted{Attempt: 3, LeaseUntil: at, Trigger: domain.TriggerSchedule, RefreshTokenFP: "sha256:0123456789ab"},
		domain.RefreshStarted{Attempt: -1, LeaseUntil: zoned},
		domain.RefreshStarted{},
		domain.RefreshSucceeded{Attempt: 1, Tokens: ti, Rotated: true},
		domain.RefreshSucceeded{},
		domain.RefreshFailed{Terminal: true, Class: "terminal", ErrorCode: "invalid_grant", HTTPStatus: 400, Attempt: 2, Reason: domain.ReasonInvalidGrant, RetryAt: at},
		domain.RefreshFailed{Class: "transient", Attempt: 1, RetryAt: zoned},
		domain.RefreshFailed{},
		domain.RefreshLeaseExtended{LeaseUntil: at},
		domain.RefreshLeaseExtended{},
		domain.AccessRejected{HTTPStatus: 401, ErrorCode: "invalid_token", Scope: odd, AccessTokenFP: "sha256:0123456789ab", Terminal: true, Reason: domain.ReasonAccessTokenRejected},
		domain.AccessRejected{},
		domain.TokensInvalidated{Reason: domain.ReasonInvalidGrant, AccessTokenFP: "sha256:0123456789ab", RefreshTokenFP: "sha256:ba9876543210", ProviderRevoked: true},
		domain.TokensInvalidated{},
		domain.TokensInvalidated{RefreshTokenFP: "x"},
		domain.ConnectionUpdated{Scopes: []string{"a"}, Config: map[string]string{"b": "2", "a": "1"}},
		domain.ConnectionUpdated{},
		domain.ConnectionUpdated{Scopes: []string{}, Config: map[string]string{}},
		domain.ConnectionDeleted{},
	}
}

// The fast encoder writes exactly what encoding/json writes (so a hash in
// the chain does not depend on the encoder), and what it writes decodes to
// the same event, for every event type, chained or not, with and without
// an actor.
func TestFastEncoderMatchesJSON(t *testing.T) {
	seen := map[domain.EventType]bool{}
	for i, p := range fastEncoderCases() {
		seen[p.EventType()] = true
		for _, actor := range []string{"", "instance/api-1", "user<&>\u2028"} {
			for _, chained := range []bool{false, true} {
				e := domain.Event{ID: "4b0f3c1e-8d0e-4c43-9d1b-0d4f6b2f7a10", ConnectionID: "2f9c4a4e-6a55-4c0e-a8a5-7f0b3f1a2c3d",
					Time: time.Date(2026, 11, 28, 10, 2, 13, 412000000, time.FixedZone("y", 3600)), Actor: actor, Payload: p}
				if chained {
					Chain(&e, domain.ChainHead{Hash: [32]byte{0xde, 0xad, 0xbe, 0xef, 31: 0x7f}})
				}
				typ := p.EventType()
				want, werr := encodeReflect(e, typ, CurrentVersion[typ])
				got, gerr := Encode(e)
				fast, ferr := appendEnvelope(nil, &e, typ, CurrentVersion[typ])
				if werr != nil || gerr != nil || ferr != nil {
					t.Fatalf("case %d (%s): errors reflect %v, Encode %v, fast %v", i, typ, werr, gerr, ferr)
				}
				if !bytes.Equal(fast, want) || !bytes.Equal(got, want) {
					t.Fatalf("case %d (%s): fast encoder wrote\n%s\nencoding/json wrote\n%s", i, typ, fast, want)
				}
				dw, werr := Decode(want)
				dg, gerr := Decode(got)
				if (werr == nil) != (gerr == nil) || !reflect.DeepEqual(dw, dg) {
					t.Fatalf("case %d (%s): decodes differ: %+v %v / %+v %v", i, typ, dw, werr, dg, gerr)
				}
			}
		}
	}
	for _, typ := range domain.EventTypes {
		if !seen[typ] {
			t.Errorf("no case for %s", typ)
		}
	}
}

// A time encoding/json refuses is left to it: Encode fails as it did.
func TestFastEncoderLeavesRefusedTimesToJSON(t *testing.T) {
	for _, at := range []time.Time{
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("far", 25*3600)),
	} {
		e := domain.Event{ID: "id", ConnectionID: "2f9c4a4e-6a55-4c0e-a8a5-7f0b3f1a2c3d", Time: time.Now(), Payload: domain.RefreshLeaseExtended{LeaseUntil: at}}
		if _, err := appendEnvelope(nil, &e, e.Type(), 1); err != errFallback {
			t.Errorf("%v: fast encoder: %v, want errFallback", at, err)
		}
		_, want := encodeReflect(e, e.Type(), 1)
		_, got := Encode(e)
		if want == nil || got == nil || got.Error() != want.Error() {
			t.Errorf("%v: Encode error %v, encoding/json's %v", at, got, want)
		}
	}
}

// FuzzFastEncoder compares the two encoders on arbitrary strings.
func FuzzFastEncoder(f *testing.F) {
	f.Add("pleo", "team", "finance", "instance/api-1")
	f.Add("\xff<>&\u2028", "\x00", "\"\\", "")
	f.Fuzz(func(t *testing.T, a, k, v, actor string) {
		for _, p := range []domain.Payload{
			domain.ConnectionCreated{Provider: a, Scopes: []string{k, v}, Config: map[string]string{k: v, a: actor}},
			domain.AuthorisationFailed{AttemptID: a, Reason: domain.Reason(k), Description: v},
		} {
			e := domain.Event{ID: a + "x", ConnectionID: "2f9c4a4e-6a55-4c0e-a8a5-7f0b3f1a2c3d", Time: time.Unix(1, 2), Actor: actor, Payload: p}
			want, werr := encodeReflect(e, p.EventType(), CurrentVersion[p.EventType()])
			got, gerr := appendEnvelope(nil, &e, p.EventType(), CurrentVersion[p.EventType()])
			if errors.Is(werr, domain.ErrInvalidCommand) && gerr == nil && len(got) > MaxEventSize {
				// Too large for a reader: encoding/json's path refuses it
				// itself, the fast path's caller (Encode) after encoding.
				if _, err := Encode(e); !errors.Is(err, domain.ErrInvalidCommand) {
					t.Fatalf("Encode of a %d-byte event: %v, want it refused", len(got), err)
				}
				continue
			}
			if werr != nil || gerr != nil || !bytes.Equal(got, want) {
				t.Fatalf("fast %q %v, encoding/json %q %v", got, gerr, want, werr)
			}
			if app, err := AppendEncode([]byte("p"), &e); err != nil || string(app[:1]) != "p" || !bytes.Equal(app[1:], want) {
				t.Fatalf("AppendEncode %q %v, want \"p\" + %q", app, err, want)
			}
		}
	})
}

// BenchmarkEncoders compares the fast encoder with encoding/json on the
// store's hot event, a chained refresh.succeeded.
func BenchmarkEncoders(b *testing.B) {
	e := domain.Event{ID: "4b0f3c1e-8d0e-4c43-9d1b-0d4f6b2f7a10", ConnectionID: "2f9c4a4e-6a55-4c0e-a8a5-7f0b3f1a2c3d", Time: time.Now(), Actor: "instance/api-1",
		Payload: domain.RefreshSucceeded{Attempt: 1, Rotated: true, Tokens: domain.TokenInfo{AccessTokenFP: "sha256:0123456789ab", RefreshTokenFP: "sha256:ba9876543210", AccessTokenExpiresAt: time.Now(), Scopes: []string{"users:read", "expenses:write"}}}}
	Chain(&e, domain.ChainHead{Hash: [32]byte{1}})
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Encode(e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := encodeReflect(e, e.Type(), 1); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// AppendEncode appends exactly Encode's bytes after what dst holds, and on
// a refusal (also one encoding/json makes, after the fast encoder left the
// event to it) returns dst as it was.
func TestAppendEncode(t *testing.T) {
	prefix := []byte("kept|")
	for i, p := range fastEncoderCases() {
		e := domain.Event{ID: "4b0f3c1e-8d0e-4c43-9d1b-0d4f6b2f7a10", ConnectionID: "2f9c4a4e-6a55-4c0e-a8a5-7f0b3f1a2c3d", Time: time.Now(), Actor: "instance/api-1", Payload: p}
		Chain(&e, domain.ChainHead{Hash: [32]byte{9}})
		want, err := Encode(e)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		for _, c := range []int{0, 8, 4096} { // reallocating, or not
			dst := append(make([]byte, 0, len(prefix)+c), prefix...)
			got, err := AppendEncode(dst, &e)
			if err != nil || !bytes.Equal(got[:len(prefix)], prefix) || !bytes.Equal(got[len(prefix):], want) {
				t.Fatalf("case %d, cap +%d: %q %v, want %q + %q", i, c, got, err, prefix, want)
			}
		}
	}
	big := domain.Event{ID: "x", ConnectionID: "2f9c4a4e-6a55-4c0e-a8a5-7f0b3f1a2c3d", Time: time.Now(),
		Payload: domain.AuthorisationFailed{AttemptID: "a", Reason: domain.ReasonInvalidGrant, Description: strings.Repeat("d", MaxEventSize)}}
	far := domain.Event{ID: "x", ConnectionID: big.ConnectionID, Time: time.Now(), Payload: domain.RefreshLeaseExtended{LeaseUntil: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}}
	for _, e := range []domain.Event{big, far, {ID: "x", ConnectionID: "not an id", Payload: domain.ConnectionDeleted{}}, {ID: "x", ConnectionID: big.ConnectionID}} {
		got, err := AppendEncode(prefix, &e)
		if err == nil || !bytes.Equal(got, prefix) {
			t.Errorf("%T: %q %v, want the prefix alone and an error", e.Payload, got, err)
		}
	}
}
