package webhook

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// scanHead reads what encoding/json reads (or refuses what it refuses) on
// envelopes as the store writes them and on odd ones.
func TestScanHeadAgreesWithEncodingJSON(t *testing.T) {
	for _, b := range []string{
		`{"specversion":"1.0","id":"e1","source":"/tokenline","type":"tokenline.refresh.succeeded","subject":"c","data":{"id":"inner","type":"x","n":[1,{"a":"}"}]}}`,
		`{"data":{"id":"inner","type":"x"},"id":"e2","type":"tokenline.connection.created"}`,
		` { "id" : "e3" , "n" : -1.5e3, "ok": true, "nil": null, "s": "a\"b,}" , "type":"t" } `,
		`{"id":"e\u00e94","type":"t"}`,
		`{"id":"e5","type":"t\"q"}`,
		`{"i\u0064":"e6","type":"t"}`,
		`{"type":"t"}`,
		`{"id":7,"type":"t"}`,
		`{"id":"e8","type":"t"`,
		`["id","e9"]`,
		`{"id":"a","id":"e10","type":"t"}`,
		`{"id":"e11","tYpe":"t2","type":"t"}`,
		`{"id":"e12","type":"t","ID":"e13"}`,
		"{\"id\":\"e14\",\"a\xe0\":1,\"type\":\"t\"}",
		``,
	} {
		got, ok := scanHead([]byte(b))
		var want head
		err := json.Unmarshal([]byte(b), &want)
		wantOK := err == nil && want.ID != ""
		if ok != wantOK || (ok && got != want) {
			t.Errorf("%s: scanHead %+v %v, encoding/json %+v %v", b, got, ok, want, err)
		}
	}
}

// The pooled signer signs as Sign does, with every key.
func TestSignerMatchesSign(t *testing.T) {
	k1, _ := SecretKey(NewSecret())
	k2, _ := SecretKey(NewSecret())
	s := newSigner([][]byte{k1, k2})
	body := []byte(strings.Repeat(`{"x":1}`, 50))
	for range 3 { // reused states sign the same
		want := Sign(k1, "msg_1", 1614265330, body) + " " + Sign(k2, "msg_1", 1614265330, body)
		if got := s.header("msg_1", 1614265330, body); got != want {
			t.Fatalf("signer %q, Sign %q", got, want)
		}
	}
}

// FuzzScanHead: on valid JSON, scanHead reads what encoding/json reads or
// refuses what it refuses. (On invalid JSON it may read an id where
// encoding/json refuses, "{"id":"a"}x" for one: it does not validate what it
// skips, and the store writes only valid JSON.)
func FuzzScanHead(f *testing.F) {
	f.Add([]byte(`{"specversion":"1.0","id":"e1","source":"/tokenline","type":"tokenline.refresh.succeeded","data":{"id":"x"}}`))
	f.Add([]byte(`{"i\u0064":"e6","type":"t"}`))
	f.Add([]byte(`{"id":"a","id":"e10","type":"t"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			return
		}
		got, ok := scanHead(b)
		var want head
		err := json.Unmarshal(b, &want)
		wantOK := err == nil && want.ID != ""
		if ok != wantOK || (ok && got != want) {
			t.Fatalf("%q: scanHead %+v %v, encoding/json %+v %v", b, got, ok, want, err)
		}
	})
}

// FuzzAppendAttempt: the log's encoder writes what json.Marshal writes.
func FuzzAppendAttempt(f *testing.F) {
	f.Add("e1", "tokenline.refresh.succeeded", "c", "delivered", "", "i", int64(1_800_000_000_123), 1.5, 204, false)
	f.Add("é\"<", "t\n", "\u2028", "failed", "HTTP 503 & <x>", "", int64(-62135596800000), 1e-7, 0, true)
	f.Fuzz(func(t *testing.T, id, typ, conn, outcome, errs, inst string, ms int64, lat float64, status int, retry bool) {
		tm := time.UnixMilli(ms).UTC()
		a := Attempt{Time: tm, EventID: id, EventType: typ, Connection: conn, StreamSeq: uint64(ms), Attempt: status / 7,
			Outcome: outcome, Status: status, Error: errs, LatencyMS: lat, Instance: inst}
		if retry {
			n := tm.Add(time.Duration(ms) * time.Microsecond).In(time.FixedZone("z", status%86400))
			a.NextRetry = &n
		}
		want, err := json.Marshal([]Attempt{a})
		if err != nil {
			want = []byte("[null]")
		}
		if got := appendAttempts(nil, []Attempt{a}); string(got) != string(want) {
			t.Fatalf("\n got %s\nwant %s", got, want)
		}
	})
}
