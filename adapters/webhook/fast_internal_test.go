package webhook

import (
	"encoding/json"
	"strings"
	"testing"
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
