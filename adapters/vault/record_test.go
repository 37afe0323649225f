package vault

import (
	"bytes"
	"encoding/json"
	"reflect"
	"regexp"
	"testing"
	"time"
)

// recordCases are token records as tokenline writes them and as others may
// have: the codec's fast path takes the first kind, encoding/json the rest.
func recordCases() []record {
	exp := time.Date(2026, 12, 2, 8, 38, 3, 123456789, time.UTC)
	return []record{
		{},
		{AccessToken: "ory_at_abc.DEF-ghi_123", RefreshToken: "ory_rt_xyz.UVW", TokenType: "bearer", Expiry: exp, Scopes: []string{"users:read", "export-jobs:read"}},
		{AccessToken: "a"},
		{RefreshToken: "r", Scopes: []string{"s"}},
		{AccessToken: "a", Expiry: exp.Truncate(time.Second)},
		{AccessToken: "a", Expiry: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)},
		{AccessToken: "a", Expiry: time.Date(0, 1, 1, 0, 0, 0, 1, time.UTC)},
		{AccessToken: "a", Expiry: exp.In(time.FixedZone("x", 3600))},            // not UTC: encoding/json
		{AccessToken: "a", Expiry: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, // refused by both
		{AccessToken: `a"b\c<d>&e`, RefreshToken: "é\u2028\x01", Scopes: []string{"a b", "<x>"}},
		{AccessToken: "a", Scopes: []string{""}},
		{AccessToken: "a", Scopes: []string{}},
		{AccessToken: "\xff\xfe"},
	}
}

// TestRecordCodecMatchesEncodingJSON: marshalRecord writes json.Marshal's
// bytes (stored values do not change), and unmarshalRecord reads them, and
// every variation on them, to what json.Unmarshal reads.
func TestRecordCodecMatchesEncodingJSON(t *testing.T) {
	for i, r := range recordCases() {
		want, werr := json.Marshal(r)
		got, gerr := marshalRecord(&r)
		if (werr != nil) != (gerr != nil) || !bytes.Equal(got, want) {
			t.Fatalf("case %d: marshalRecord = %q, %v; json.Marshal = %q, %v", i, got, gerr, want, werr)
		}
		if werr != nil {
			continue
		}
		checkParse(t, want)
	}
	for _, s := range []string{
		``, `{`, `}`, `{}`, `{} `, ` {}`, `null`, `[]`, `{"access_token":"a"}`, `{"access_token":"a",}`,
		`{"access_token":""}`, `{"access_token":"a","access_token":"b"}`, `{"refresh_token":"r","access_token":"a"}`,
		`{"Access_Token":"a"}`, `{"access_token":"a","other":1}`, `{"access_token":"a\u0041"}`, `{"access_token": "a"}`,
		`{"expiry":"2026-12-02T08:38:03Z"}`, `{"expiry":"2026-12-02T08:38:03+01:00"}`, `{"expiry":"2026-12-02"}`,
		`{"expiry":"2026-12-02T08:38:03.Z"}`, `{"expiry":null}`, `{"scopes":[]}`, `{"scopes":["a",]}`, `{"scopes":["a""b"]}`,
		`{"scopes":["a"],"token_type":"t"}`, `{"scopes":["a","b"]}`, `{"scopes":"a"}`, `{"access_token":"a"}x`,
		`{"access_token":"a","refresh_token":"b","token_type":"c","expiry":"2026-12-02T08:38:03.5Z","scopes":["x"]}`,
		`{"access_token":1}`, `{"access_token":"a"`, `{"access_token"`, `{"access_token":`, `{"access_token":"a",`,
		`{"scopes":["a"`, `{"scopes":[`, `{"expiry":"`,
	} {
		checkParse(t, []byte(s))
	}
}

// checkParse compares unmarshalRecord and json.Unmarshal on data.
func checkParse(t testing.TB, data []byte) {
	t.Helper()
	var want, got record
	werr := json.Unmarshal(data, &want)
	gerr := unmarshalRecord(data, &got)
	if (werr != nil) != (gerr != nil) {
		t.Fatalf("%q: unmarshalRecord error %v, json.Unmarshal error %v", data, gerr, werr)
	}
	if werr == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%q: unmarshalRecord = %+v, json.Unmarshal = %+v", data, got, want)
	}
	var fast record
	if parseRecord(data, &fast) && (werr != nil || !reflect.DeepEqual(fast, want)) {
		t.Fatalf("%q: the fast path read %+v; json.Unmarshal %+v, %v", data, fast, want, werr)
	}
}

// FuzzParseRecord: whatever the bytes, the codec reads what encoding/json
// reads.
func FuzzParseRecord(f *testing.F) {
	for _, r := range recordCases() {
		if b, err := json.Marshal(r); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkParse(t, data) })
}

// TestValidIDMatchesTheExpression: the loop accepts exactly the ids the
// expression it replaced, ^[A-Za-z0-9_-]{1,128}$, accepts.
func TestValidIDMatchesTheExpression(t *testing.T) {
	ids := []string{"", "a", "A-z_0", "0b9f0a4e-6a53-4a57-9c2e-1d0e5b8f7c21", "a.b", "a*", "a>", "a b", "é", "a\n", "-", "_",
		string(bytes.Repeat([]byte("x"), 128)), string(bytes.Repeat([]byte("x"), 129))}
	for c := 0; c < 256; c++ {
		ids = append(ids, "a"+string(rune(c)), string([]byte{byte(c)}))
	}
	for _, id := range ids {
		want := idExpression.MatchString(id)
		if got := validID(id); got != want {
			t.Errorf("validID(%q) = %v, the expression says %v", id, got, want)
		}
	}
}

var idExpression = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// FuzzMarshalRecord: whatever the strings and the time, marshalRecord
// writes json.Marshal's bytes, or fails where it fails.
func FuzzMarshalRecord(f *testing.F) {
	f.Add("ory_at_x", "ory_rt_y", "bearer", int64(1796200000123456789), "users:read", "a<b")
	f.Add("", "", "", int64(0), "", "")
	f.Fuzz(func(t *testing.T, access, refresh, typ string, nanos int64, scope1, scope2 string) {
		r := record{AccessToken: access, RefreshToken: refresh, TokenType: typ, Scopes: []string{scope1, scope2}}
		if nanos != 0 {
			r.Expiry = time.Unix(0, nanos).UTC()
		}
		want, werr := json.Marshal(r)
		got, gerr := marshalRecord(&r)
		if (werr != nil) != (gerr != nil) || !bytes.Equal(got, want) {
			t.Fatalf("marshalRecord = %q, %v; json.Marshal = %q, %v", got, gerr, want, werr)
		}
	})
}
