package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"hash"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// signer signs with a subscription's keys (the current secret and, for a
// while after a rotation, the previous one), reusing keyed HMAC states: a
// keyed HMAC-SHA256 costs two hash states and the key's padding to build,
// on every delivery otherwise.
type signer struct {
	macs []*sync.Pool
	// until: from then on the keys are out of date (the previous secret's
	// grace ends); zero: until the subscription changes.
	until time.Time
}

func newSigner(keys [][]byte) *signer {
	s := &signer{}
	for _, k := range keys {
		k := k
		s.macs = append(s.macs, &sync.Pool{New: func() any { return hmac.New(sha256.New, k) }})
	}
	return s
}

// header returns the webhook-signature header: one "v1,<base64>" per key,
// space-separated, each as Sign computes it.
func (s *signer) header(id string, ts int64, body []byte) string {
	var pre [128]byte
	msg := append(strconv.AppendInt(append(append(pre[:0], id...), '.'), ts, 10), '.')
	var buf [2 * 48]byte
	out := buf[:0]
	var sum [sha256.Size]byte
	for i, p := range s.macs {
		mac := p.Get().(hash.Hash)
		mac.Reset()
		mac.Write(msg)
		mac.Write(body)
		if i > 0 {
			out = append(out, ' ')
		}
		out = append(out, "v1,"...)
		out = base64.StdEncoding.AppendEncode(out, mac.Sum(sum[:0]))
		p.Put(mac)
	}
	return string(out)
}

// scanHead reads the top-level "id" and "type" strings of an event's JSON
// envelope without decoding the rest (the store writes only valid JSON;
// delivery sends the bytes as stored). Anything unusual at the top level (a
// key or one of the two values with an escape, a value of another kind,
// broken structure) falls back to encoding/json, whose verdict counts.
func scanHead(b []byte) (h head, ok bool) {
	if h, ok := scanTop(b); ok {
		return h, true
	}
	if err := json.Unmarshal(b, &h); err != nil || h.ID == "" {
		return head{}, false
	}
	return h, true
}

func scanTop(b []byte) (h head, ok bool) {
	i := ws(b, 0)
	if i >= len(b) || b[i] != '{' {
		return h, false
	}
	i++
	for n := 0; n < 64; n++ {
		i = ws(b, i)
		key, j, plain := strBytes(b, i)
		if !plain {
			return h, false
		}
		i = ws(b, j)
		if i >= len(b) || b[i] != ':' {
			return h, false
		}
		i = ws(b, i+1)
		switch string(key) { // no allocation: only compared
		case "id", "type":
			vb, j, plain := strBytes(b, i)
			// encoding/json replaces invalid UTF-8 with U+FFFD: such a
			// value goes to it.
			if !plain || !utf8.Valid(vb) {
				return h, false
			}
			v := string(vb)
			if string(key) == "id" {
				h.ID = v
			} else {
				h.Type = v
			}
			i = j
		default:
			// encoding/json matches keys without regard to case ("ID"
			// sets the id too): such a key goes to it.
			if !plainKey(key) {
				return h, false
			}
			if i = skip(b, i); i < 0 {
				return h, false
			}
		}
		i = ws(b, i)
		if i >= len(b) {
			return h, false
		}
		switch b[i] {
		case ',':
			i++
		case '}':
			return h, h.ID != ""
		default:
			return h, false
		}
	}
	return h, false
}

func ws(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainKey reports whether key is ASCII and neither "id" nor "type" in
// another case.
func plainKey(key []byte) bool {
	for _, c := range key {
		if c >= 0x80 {
			return false
		}
	}
	return !strings.EqualFold(string(key), "id") && !strings.EqualFold(string(key), "type")
}

// strBytes reads a string without escapes at b[i] (its bytes, not
// copied); plain is false otherwise.
func strBytes(b []byte, i int) (s []byte, end int, plain bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, i, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20:
			return nil, i, false
		}
	}
	return nil, i, false
}

// skip passes the value at b[i] (strings with escapes, nested objects and
// arrays); -1 if it does not end.
func skip(b []byte, i int) int {
	depth := 0
	for i < len(b) {
		switch c := b[i]; c {
		case '"':
			i++
			for i < len(b) && b[i] != '"' {
				if b[i] == '\\' {
					i++
				}
				i++
			}
			if i >= len(b) {
				return -1
			}
			i++
			if depth == 0 {
				return i
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i
			}
			depth--
			if depth == 0 {
				return i + 1
			}
		case ',':
			if depth == 0 {
				return i
			}
		}
		i++
	}
	if depth == 0 {
		return i
	}
	return -1
}
