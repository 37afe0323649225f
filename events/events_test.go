package events_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

var update = flag.Bool("update", false, "rewrite testdata/current/*.json from the sample events (only together with a deliberate wire change)")

const (
	connID = "2f9c4a4e-6a55-4c0e-a8a5-7f0b3f1a2c3d"
	evID   = "4b0f3c1e-8d0e-4c43-9d1b-0d4f6b2f7a10"
	actor  = "instance/api-1"

	// Known token values: they must never reach the wire.
	accessToken  = "pleo_at_9f8e7d6c5b4a39281706f5e4d3c2b1a0_ACCESS"
	refreshToken = "pleo_rt_0a1b2c3d4e5f60718293a4b5c6d7e8f9_REFRESH"
)

var (
	at0 = time.Date(2026, 11, 28, 10, 2, 13, 412_000_000, time.UTC)

	sampleTokens = domain.Tokens{
		AccessToken:  accessToken,
		RefreshToken: refreshToken,
		TokenType:    "Bearer",
		Expiry:       at0.Add(time.Hour),
		Scopes:       []string{"users:read", "expenses:write"},
	}
)

// samplePayloads returns one realistic payload per event type. Token data
// enters only through Tokens.Info(), as the domain does it.
func samplePayloads() map[domain.EventType]domain.Payload {
	info := sampleTokens.Info()
	return map[domain.EventType]domain.Payload{
		domain.EventConnectionCreated: domain.ConnectionCreated{
			Provider: "pleo",
			Scopes:   []string{"users:read", "expenses:write"},
			Config:   map[string]string{"team": "finance", "region": "eu"},
		},
		domain.EventAuthorisationStarted: domain.AuthorisationStarted{
			AttemptID: "att_7Yq2c1", Scopes: []string{"users:read", "expenses:write"}, ExpiresAt: at0.Add(10 * time.Minute),
		},
		domain.EventAuthorisationCompleted: domain.AuthorisationCompleted{AttemptID: "att_7Yq2c1", Tokens: info},
		domain.EventAuthorisationFailed: domain.AuthorisationFailed{
			AttemptID: "att_7Yq2c1", Reason: domain.ReasonAuthorisationDenied, ErrorCode: "access_denied", Description: "The user denied the request",
		},
		domain.EventRefreshStarted: domain.RefreshStarted{
			Attempt: 2, LeaseUntil: at0.Add(30 * time.Second), Trigger: domain.TriggerSchedule, RefreshTokenFP: info.RefreshTokenFP,
		},
		domain.EventRefreshSucceeded:     domain.RefreshSucceeded{Attempt: 1, Tokens: info, Rotated: true},
		domain.EventRefreshLeaseExtended: domain.RefreshLeaseExtended{LeaseUntil: at0.Add(45 * time.Second)},
		domain.EventRefreshFailed: domain.RefreshFailed{
			Terminal: true, Class: "terminal", ErrorCode: "invalid_grant", HTTPStatus: 400, Attempt: 1, Reason: domain.ReasonInvalidGrant,
		},
		domain.EventAccessRejected: domain.AccessRejected{
			HTTPStatus: 401, ErrorCode: "invalid_token", AccessTokenFP: info.AccessTokenFP, Terminal: true, Reason: domain.ReasonAccessTokenRejected,
		},
		domain.EventTokensInvalidated: domain.TokensInvalidated{
			Reason: domain.ReasonInvalidGrant, AccessTokenFP: info.AccessTokenFP, RefreshTokenFP: info.RefreshTokenFP, ProviderRevoked: true,
		},
		domain.EventConnectionUpdated: domain.ConnectionUpdated{Scopes: []string{"users:read"}, Config: map[string]string{"team": "ops"}},
		domain.EventConnectionDeleted: domain.ConnectionDeleted{},
	}
}

func sampleEvent(p domain.Payload) domain.Event {
	return domain.Event{ID: evID, ConnectionID: connID, Time: at0, Actor: actor, Payload: p}
}

func encode(t testing.TB, e domain.Event) []byte {
	t.Helper()
	b, err := events.Encode(e)
	if err != nil {
		t.Fatalf("encode %s: %v", e.Type(), err)
	}
	return b
}

func TestSamplesCoverTheVocabulary(t *testing.T) {
	samples := samplePayloads()
	if len(samples) != len(domain.EventTypes) || len(events.CurrentVersion) != len(domain.EventTypes) {
		t.Fatalf("%d samples, %d versions, %d event types", len(samples), len(events.CurrentVersion), len(domain.EventTypes))
	}
	for _, typ := range domain.EventTypes {
		p, ok := samples[typ]
		if !ok {
			t.Fatalf("no sample for %s", typ)
		}
		if p.EventType() != typ {
			t.Fatalf("sample for %s has type %s", typ, p.EventType())
		}
		if events.CurrentVersion[typ] < 1 {
			t.Fatalf("%s has no current schema version", typ)
		}
	}
}

func TestRoundTripEveryType(t *testing.T) {
	for _, typ := range domain.EventTypes {
		t.Run(string(typ), func(t *testing.T) {
			in := sampleEvent(samplePayloads()[typ])
			in.Seq = 42 // not part of the wire format
			b := encode(t, in)

			var env map[string]any
			if err := json.Unmarshal(b, &env); err != nil {
				t.Fatalf("envelope is not a JSON object: %v", err)
			}
			want := map[string]any{
				"specversion":     "1.0",
				"id":              evID,
				"source":          "/tokenline/" + actor,
				"type":            "tokenline." + string(typ),
				"subject":         connID,
				"time":            "2026-11-28T10:02:13.412Z",
				"datacontenttype": "application/json",
				"schemaversion":   float64(events.CurrentVersion[typ]),
				"actor":           actor,
			}
			for k, v := range want {
				if env[k] != v {
					t.Errorf("envelope %s = %#v, want %#v", k, env[k], v)
				}
			}
			if _, ok := env["data"].(map[string]any); !ok {
				t.Errorf("data is %T, want a JSON object", env["data"])
			}
			for k := range env {
				if _, ok := want[k]; !ok && k != "data" {
					t.Errorf("unexpected envelope attribute %q", k)
				}
			}

			out, err := events.Decode(b)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			in.Seq = 0
			in.Link.Hash = events.HashOf(b) // the hash of the bytes decoded
			if !reflect.DeepEqual(out, in) {
				t.Fatalf("round trip:\n got %#v\nwant %#v", out, in)
			}
		})
	}
}

func TestEncodeNormalisesTimeAndSource(t *testing.T) {
	paris := time.FixedZone("CET", 3600)
	in := sampleEvent(domain.ConnectionDeleted{})
	in.Actor = ""
	in.Time = at0.In(paris)
	b := encode(t, in)
	var env map[string]any
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatal(err)
	}
	if env["time"] != "2026-11-28T10:02:13.412Z" || env["source"] != events.Source {
		t.Fatalf("time %v source %v", env["time"], env["source"])
	}
	if _, ok := env["actor"]; ok {
		t.Fatal("empty actor is written")
	}
	out, err := events.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !out.Time.Equal(in.Time) || out.Time.Location() != time.UTC || out.Actor != "" {
		t.Fatalf("decoded time %v actor %q", out.Time, out.Actor)
	}
}

// The files in testdata/current were written by this build at the current
// schema versions. Decode must keep reading them as they are for as long as
// tokenline runs (they are events "written today"). Encode changing them is
// a wire change: compatible ones are regenerated with -update, incompatible
// ones need a new schema version, with the old files kept under testdata/vN
// and an upcast test like TestRefreshFailedV1IsUpcast.
func TestCurrentWireFormatIsStable(t *testing.T) {
	for _, typ := range domain.EventTypes {
		t.Run(string(typ), func(t *testing.T) {
			in := sampleEvent(samplePayloads()[typ])
			path := filepath.Join("testdata", "current", string(typ)+".json")
			b := encode(t, in)
			if *update {
				var buf bytes.Buffer
				if err := json.Indent(&buf, b, "", "  "); err != nil {
					t.Fatal(err)
				}
				buf.WriteByte('\n')
				if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			golden, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var compact bytes.Buffer
			if err := json.Compact(&compact, golden); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(compact.Bytes(), b) {
				t.Errorf("Encode changed the wire format of %s: if old readers still read it, regenerate with -update; "+
					"otherwise bump its schema version and keep the old file under testdata/vN:\n got %s\nwant %s", typ, b, compact.Bytes())
			}
			out, err := events.Decode(golden)
			if err != nil {
				t.Fatalf("decode %s: %v", path, err)
			}
			out.Link.Hash = [32]byte{} // the hash of the golden file's bytes
			if !reflect.DeepEqual(out, in) {
				t.Fatalf("%s decodes to\n %#v\nwant %#v", path, out, in)
			}
		})
	}
}

func TestRefreshFailedV1IsUpcast(t *testing.T) {
	cases := []struct {
		file string
		want domain.RefreshFailed
	}{
		{"terminal_invalid_grant.json", domain.RefreshFailed{
			Terminal: true, Class: "terminal", ErrorCode: "invalid_grant", HTTPStatus: 400, Attempt: 1, Reason: domain.ReasonInvalidGrant}},
		{"terminal_invalid_client.json", domain.RefreshFailed{
			Terminal: true, Class: "terminal", ErrorCode: "invalid_client", HTTPStatus: 401, Attempt: 1, Reason: domain.ReasonInvalidClient}},
		{"terminal_unknown_code.json", domain.RefreshFailed{
			Terminal: true, Class: "terminal", ErrorCode: "server_says_no", HTTPStatus: 400, Attempt: 1, Reason: domain.ReasonTokenEndpointRejected}},
		{"transient_503.json", domain.RefreshFailed{
			Terminal: false, Class: "transient", ErrorCode: "temporarily_unavailable", HTTPStatus: 503, Attempt: 1}},
		{"transient_network.json", domain.RefreshFailed{Class: "transient", Attempt: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", "v1", "refresh.failed", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			e, err := events.Decode(b)
			if err != nil {
				t.Fatalf("decode v1: %v", err)
			}
			if e.ID == "" || e.ConnectionID != connID || e.Time.IsZero() || e.Type() != domain.EventRefreshFailed {
				t.Fatalf("envelope: %#v", e)
			}
			got, ok := e.Payload.(domain.RefreshFailed)
			if !ok {
				t.Fatalf("payload %T", e.Payload)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("upcast\n got %#v\nwant %#v", got, tc.want)
			}
			// Re-encoding writes the v2 shape.
			var env struct {
				SchemaVersion int                        `json:"schemaversion"`
				Data          map[string]json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal(encode(t, e), &env); err != nil {
				t.Fatal(err)
			}
			if env.SchemaVersion != 2 || env.Data["code"] != nil || env.Data["status"] != nil || env.Data["class"] == nil {
				t.Fatalf("re-encoded as v%d data %v", env.SchemaVersion, env.Data)
			}
		})
	}
}

func TestRefreshFailedV2IsNotUpcast(t *testing.T) {
	// v2 data with the v1 field names: those are unknown fields, not aliases.
	b := []byte(`{"specversion":"1.0","id":"x","source":"/tokenline","type":"tokenline.refresh.failed","subject":"` + connID +
		`","time":"2026-11-28T10:02:13Z","datacontenttype":"application/json","schemaversion":2,` +
		`"data":{"terminal":false,"class":"transient","code":"invalid_grant","status":400,"attempt":3}}`)
	e, err := events.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.Payload.(domain.RefreshFailed); got.ErrorCode != "" || got.HTTPStatus != 0 || got.Attempt != 3 {
		t.Fatalf("v2 read as %#v", got)
	}
}

// envelope builds an envelope with overrides; a nil value removes the key.
func envelope(typ string, version any, data any, override map[string]any) []byte {
	m := map[string]any{
		"specversion":     "1.0",
		"id":              evID,
		"source":          "/tokenline",
		"type":            typ,
		"subject":         connID,
		"time":            "2026-11-28T10:02:13.412Z",
		"datacontenttype": "application/json",
		"schemaversion":   version,
		"data":            data,
	}
	for k, v := range override {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

func checkKind(t *testing.T, err error, kind error) *events.DecodeError {
	t.Helper()
	if err == nil {
		t.Fatalf("decoded, want %v", kind)
	}
	for _, k := range []error{events.ErrMalformed, events.ErrUnknownType, events.ErrUnsupportedVersion} {
		if errors.Is(err, k) != (k == kind) {
			t.Fatalf("errors.Is(%v, %v) = %v", err, k, !(k == kind))
		}
	}
	var de *events.DecodeError
	if !errors.As(err, &de) {
		t.Fatalf("%v (%T) is not a *DecodeError", err, err)
	}
	if de.Kind != kind {
		t.Fatalf("kind %v, want %v", de.Kind, kind)
	}
	return de
}

func TestUnknownType(t *testing.T) {
	for _, typ := range []string{
		"tokenline.connection.exploded", "tokenline.", "tokenline", "com.example.connection.created",
		"connection.created", "TOKENLINE.connection.created", "tokenline.Connection.Created", "",
	} {
		t.Run(typ, func(t *testing.T) {
			e, err := events.Decode(envelope(typ, 1, map[string]any{"provider": "pleo"}, nil))
			de := checkKind(t, err, events.ErrUnknownType)
			if de.Type != typ || !reflect.DeepEqual(e, domain.Event{}) {
				t.Fatalf("type %q, event %#v", de.Type, e)
			}
		})
	}
}

func TestUnsupportedVersion(t *testing.T) {
	cases := []struct {
		typ     domain.EventType
		version int
	}{
		{domain.EventRefreshFailed, 0}, {domain.EventRefreshFailed, 3}, {domain.EventRefreshFailed, 99}, {domain.EventRefreshFailed, -1},
		{domain.EventConnectionCreated, 0}, {domain.EventConnectionCreated, 2}, {domain.EventConnectionCreated, 99},
		{domain.EventConnectionDeleted, 99},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s/v%d", tc.typ, tc.version), func(t *testing.T) {
			data := samplePayloads()[tc.typ]
			_, err := events.Decode(envelope("tokenline."+string(tc.typ), tc.version, data, nil))
			de := checkKind(t, err, events.ErrUnsupportedVersion)
			if de.Version != tc.version || de.Type != string(tc.typ) {
				t.Fatalf("%#v", de)
			}
			if !strings.Contains(err.Error(), fmt.Sprint(events.CurrentVersion[tc.typ])) {
				t.Fatalf("error does not say which version this build reads: %v", err)
			}
		})
	}
	// A missing schemaversion is version 0.
	_, err := events.Decode(envelope("tokenline.connection.deleted", nil, map[string]any{}, nil))
	checkKind(t, err, events.ErrUnsupportedVersion)
}

func malformedInputs() map[string][]byte {
	rf := "tokenline.refresh.failed"
	cc := "tokenline.connection.created"
	okData := map[string]any{"provider": "pleo", "scopes": []string{"users:read"}}
	return map[string][]byte{
		"empty":                  nil,
		"not json":               []byte("not json"),
		"json null":              []byte("null"),
		"json array":             []byte(`[{"specversion":"1.0"}]`),
		"json string":            []byte(`"tokenline.connection.created"`),
		"truncated":              envelope(cc, 1, okData, nil)[:80],
		"trailing garbage":       append(envelope(cc, 1, okData, nil), []byte(" {}")...),
		"too large":              envelope(cc, 1, map[string]any{"provider": "pleo", "config": map[string]string{"k": strings.Repeat("x", events.MaxEventSize)}}, nil),
		"specversion 0.3":        envelope(cc, 1, okData, map[string]any{"specversion": "0.3"}),
		"specversion 1":          envelope(cc, 1, okData, map[string]any{"specversion": 1}),
		"specversion missing":    envelope(cc, 1, okData, map[string]any{"specversion": nil}),
		"id missing":             envelope(cc, 1, okData, map[string]any{"id": nil}),
		"id too long":            envelope(cc, 1, okData, map[string]any{"id": strings.Repeat("a", 129)}),
		"id not a string":        envelope(cc, 1, okData, map[string]any{"id": 7}),
		"subject missing":        envelope(cc, 1, okData, map[string]any{"subject": nil}),
		"subject with dots":      envelope(cc, 1, okData, map[string]any{"subject": "tokenline.conn." + connID}),
		"subject dotted uuid":    envelope(cc, 1, okData, map[string]any{"subject": "2f9c4a4e.6a55.4c0e.a8a5.7f0b3f1a2c3d"}),
		"subject wildcard *":     envelope(cc, 1, okData, map[string]any{"subject": "*"}),
		"subject wildcard >":     envelope(cc, 1, okData, map[string]any{"subject": ">"}),
		"subject uuid with >":    envelope(cc, 1, okData, map[string]any{"subject": "2f9c4a4e-6a55-4c0e-a8a5-7f0b3f1a2c3>"}),
		"subject uppercase":      envelope(cc, 1, okData, map[string]any{"subject": strings.ToUpper(connID)}),
		"subject with space":     envelope(cc, 1, okData, map[string]any{"subject": "2f9c4a4e-6a55-4c0e-a8a5-7f0b3f1a2c3 "}),
		"time missing":           envelope(cc, 1, okData, map[string]any{"time": nil}),
		"time zero":              envelope(cc, 1, okData, map[string]any{"time": "0001-01-01T00:00:00Z"}),
		"time not rfc3339":       envelope(cc, 1, okData, map[string]any{"time": "28/11/2026 10:02"}),
		"time a number":          envelope(cc, 1, okData, map[string]any{"time": 1764324133}),
		"time beyond year 9999":  envelope(cc, 1, okData, map[string]any{"time": "9999-12-31T23:30:00-01:00"}),
		"time before year 0":     envelope(cc, 1, okData, map[string]any{"time": "0000-01-01T00:30:00+01:00"}),
		"schemaversion a string": envelope(cc, "1", okData, nil),
		"schemaversion a float":  envelope(cc, 1.5, okData, nil),
		"data a string":          envelope(cc, 1, "provider=pleo", nil),
		"data a number":          envelope(cc, 1, 1, nil),
		"data an array":          envelope(cc, 1, []any{okData}, nil),
		"data a bool":            envelope(cc, 1, true, nil),
		"data field wrong type":  envelope(cc, 1, map[string]any{"provider": "pleo", "scopes": "users:read"}, nil),
		"data attempt a string":  envelope(rf, 2, map[string]any{"attempt": "1", "class": "transient"}, nil),
		"data missing provider":  envelope(cc, 1, map[string]any{"scopes": []string{"users:read"}}, nil),
		"data null provider":     envelope(cc, 1, nil, nil),
		"authorisation bad reason": envelope("tokenline.authorisation.failed", 1,
			map[string]any{"attempt_id": "a", "reason": "user_was_bored"}, nil),
		"authorisation no reason": envelope("tokenline.authorisation.failed", 1, map[string]any{"attempt_id": "a"}, nil),
		"refresh.failed terminal reason outside set": envelope(rf, 2,
			map[string]any{"terminal": true, "class": "terminal", "error_code": "invalid_grant", "http_status": 400, "attempt": 1, "reason": "provider_on_fire"}, nil),
		"refresh.failed terminal reason wrong case": envelope(rf, 2,
			map[string]any{"terminal": true, "class": "terminal", "attempt": 1, "reason": "Invalid_Grant"}, nil),
		"refresh.failed terminal without reason": envelope(rf, 2,
			map[string]any{"terminal": true, "class": "terminal", "error_code": "invalid_grant", "attempt": 1}, nil),
		"refresh.failed v1 status a string": envelope(rf, 1, map[string]any{"terminal": true, "code": "invalid_grant", "status": "400"}, nil),
		"access.rejected terminal reason outside set": envelope("tokenline.access.rejected", 1,
			map[string]any{"http_status": 401, "terminal": true, "reason": "nope"}, nil),
	}
}

func TestMalformed(t *testing.T) {
	for name, b := range malformedInputs() {
		t.Run(name, func(t *testing.T) {
			e, err := events.Decode(b)
			de := checkKind(t, err, events.ErrMalformed)
			if de.Detail == "" || !strings.HasPrefix(err.Error(), "events: malformed event: ") {
				t.Fatalf("error %q", err)
			}
			if !reflect.DeepEqual(e, domain.Event{}) {
				t.Fatalf("malformed input returned an event: %#v", e)
			}
		})
	}
}

const fakeSecret = "sk_live_51HxFAKEfakeFAKEfakeSECRET0123456789"

// Decode errors say what is wrong, never what the event contained.
func TestErrorsDoNotEchoThePayload(t *testing.T) {
	rf, cc := "tokenline.refresh.failed", "tokenline.connection.created"
	inputs := map[string][]byte{
		"not json":          []byte(`{"data":{"access_token":"` + fakeSecret + `"`),
		"wrong data type":   envelope(cc, 1, map[string]any{"provider": fakeSecret, "scopes": fakeSecret}, nil),
		"unknown field ok":  envelope(rf, 2, map[string]any{"terminal": true, "reason": fakeSecret, "refresh_token": fakeSecret}, nil),
		"bad reason":        envelope("tokenline.authorisation.failed", 1, map[string]any{"reason": fakeSecret}, nil),
		"v1 wrong type":     envelope(rf, 1, map[string]any{"terminal": true, "code": fakeSecret, "status": fakeSecret}, nil),
		"unknown type":      envelope("tokenline.secret.leaked", 1, map[string]any{"token": fakeSecret}, nil),
		"unsupported":       envelope(rf, 99, map[string]any{"token": fakeSecret}, nil),
		"bad subject":       envelope(cc, 1, map[string]any{"provider": fakeSecret}, map[string]any{"subject": "a.b." + fakeSecret}),
		"too large":         envelope(cc, 1, map[string]any{"provider": strings.Repeat(fakeSecret, events.MaxEventSize/len(fakeSecret)+1)}, nil),
		"bad time":          envelope(cc, 1, map[string]any{"provider": "x"}, map[string]any{"time": fakeSecret}),
		"bad specversion":   envelope(cc, 1, map[string]any{"provider": "x"}, map[string]any{"specversion": fakeSecret}),
		"version as secret": envelope(cc, fakeSecret, map[string]any{"provider": "x"}, nil),
	}
	for name, b := range inputs {
		t.Run(name, func(t *testing.T) {
			_, err := events.Decode(b)
			if err == nil {
				t.Fatal("decoded")
			}
			for _, s := range []string{err.Error(), fmt.Sprint(err), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
				if strings.Contains(s, fakeSecret) || strings.Contains(s, fakeSecret[8:24]) {
					t.Fatalf("error echoes the payload: %s", s)
				}
			}
		})
	}
}

var fingerprintRE = regexp.MustCompile(`^sha256:[0-9a-f]{12}$`)

// No event carries a token: only fingerprints, expiry and scopes.
func TestNoSecretMaterialOnTheWire(t *testing.T) {
	info := sampleTokens.Info()
	if !fingerprintRE.MatchString(info.AccessTokenFP) || !fingerprintRE.MatchString(info.RefreshTokenFP) || info.AccessTokenFP == info.RefreshTokenFP {
		t.Fatalf("fingerprints %q %q", info.AccessTokenFP, info.RefreshTokenFP)
	}
	secrets := []string{accessToken, refreshToken, accessToken[8:40], refreshToken[8:40]}
	carriers := map[domain.EventType]bool{
		domain.EventAuthorisationCompleted: true, domain.EventRefreshStarted: true, domain.EventRefreshSucceeded: true,
		domain.EventAccessRejected: true, domain.EventTokensInvalidated: true,
	}
	for typ, p := range samplePayloads() {
		b := encode(t, sampleEvent(p))
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Fatalf("%s carries token material %q: %s", typ, s, b)
			}
		}
		if carriers[typ] && !bytes.Contains(b, []byte(info.AccessTokenFP)) && !bytes.Contains(b, []byte(info.RefreshTokenFP)) {
			t.Fatalf("%s carries no fingerprint: %s", typ, b)
		}
		if bytes.Contains(b, []byte("Bearer")) {
			t.Fatalf("%s carries the token type: %s", typ, b)
		}
	}
	// Both fingerprints and the expiry travel in a token-bearing event.
	b := encode(t, sampleEvent(domain.RefreshSucceeded{Attempt: 1, Tokens: info}))
	for _, s := range []string{info.AccessTokenFP, info.RefreshTokenFP, `"access_token_expires_at":"2026-11-28T11:02:13.412Z"`} {
		if !bytes.Contains(b, []byte(s)) {
			t.Fatalf("missing %s in %s", s, b)
		}
	}
}

func TestEncodeRefuses(t *testing.T) {
	big := map[string]string{}
	for i := range 64 { // within domain.ValidateConfig's limits, beyond MaxEventSize on the wire
		big[fmt.Sprintf("key%02d", i)] = strings.Repeat("v", 4096)
	}
	cases := map[string]domain.Event{
		"no payload":        {ID: evID, ConnectionID: connID, Time: at0},
		"no id":             {ConnectionID: connID, Time: at0, Payload: domain.ConnectionDeleted{}},
		"no connection id":  {ID: evID, Time: at0, Payload: domain.ConnectionDeleted{}},
		"bad connection id": {ID: evID, ConnectionID: "tokenline.>", Time: at0, Payload: domain.ConnectionDeleted{}},
		"unknown payload":   {ID: evID, ConnectionID: connID, Time: at0, Payload: bogusPayload{}},
		"larger than Decode accepts": {ID: evID, ConnectionID: connID, Time: at0,
			Payload: domain.ConnectionCreated{Provider: "pleo", Config: big}},
	}
	for name, e := range cases {
		t.Run(name, func(t *testing.T) {
			if b, err := events.Encode(e); err == nil {
				t.Fatalf("encoded %d bytes", len(b))
			}
		})
	}
	// The size refusal is an invalid command, not an infrastructure error.
	_, err := events.Encode(cases["larger than Decode accepts"])
	if !errors.Is(err, domain.ErrInvalidCommand) {
		t.Fatalf("oversized event: %v", err)
	}
}

type bogusPayload struct{}

func (bogusPayload) EventType() domain.EventType { return "connection.exploded" }

// Known issue (domain/event.go, not events): ConnectionUpdated documents
// "nil fields are unchanged", so an empty non-nil Scopes or Config means
// "set to empty" and Apply does so; but both fields are tagged omitempty, so
// the wire drops them and every reader decodes "unchanged". The writer's
// cache and all other readers disagree.
func TestConnectionUpdatedEmptyListSurvivesTheWire(t *testing.T) {
	in := sampleEvent(domain.ConnectionUpdated{Scopes: []string{}, Config: map[string]string{}})
	out, err := events.Decode(encode(t, in))
	if err != nil {
		t.Fatal(err)
	}
	out.Link.Hash = [32]byte{}
	if !reflect.DeepEqual(out, in) {
		t.Fatalf("got %#v want %#v", out.Payload, in.Payload)
	}
}
