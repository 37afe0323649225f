package projections

import (
	"encoding/binary"
	"slices"
)

// A connection's config (domain.Connection.Config) is held packed by the
// status projection: a string of a uvarint count and then each key and its
// value, in key order, as a uvarint length and bytes ("" for a nil map).
// A map of one entry takes about 360 bytes of heap (the map's header and a
// group of eight slots); the packed form of {"scenario": "1234"} takes 16.
// The entries hold the packed form beside the aggregate, whose Config is
// then nil; readers get a map of their own (unpackConfig), as they got a
// deep copy before. Equal configs are one string (sharedValues.config).

// packConfig appends m packed to b (b is returned unchanged for nil);
// keys is scratch space for the sorted keys.
func packConfig(b []byte, keys []string, m map[string]string) ([]byte, []string) {
	if m == nil {
		return b, keys
	}
	keys = keys[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = binary.AppendUvarint(b, uint64(len(m)))
	for _, k := range keys {
		b = appendStr(b, k)
		b = appendStr(b, m[k])
	}
	return b, keys
}

// configPairs calls fn with each key and value of the packed config p, in
// key order (the strings share p's bytes). It reports the number of pairs.
func configPairs(p string, fn func(k, v string)) int {
	if p == "" {
		return 0
	}
	n, i := uvarintStr(p, 0)
	for j := uint64(0); j < n && i >= 0; j++ {
		var k, v string
		k, i = strAt(p, i)
		v, i = strAt(p, i)
		if i >= 0 {
			fn(k, v)
		}
	}
	return int(n)
}

// unpackConfig returns the packed config p as a map of the caller's own
// (nil for "").
func unpackConfig(p string) map[string]string {
	if p == "" {
		return nil
	}
	n, _ := uvarintStr(p, 0)
	m := make(map[string]string, min(n, uint64(len(p))))
	configPairs(p, func(k, v string) { m[k] = v })
	return m
}

// uvarintStr reads a uvarint of s at i; the next index, -1 if malformed.
func uvarintStr(s string, i int) (uint64, int) {
	var v uint64
	for shift := 0; i < len(s) && shift < 64; shift += 7 {
		c := s[i]
		i++
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return v, i
		}
	}
	return 0, -1
}

// strAt reads a length-prefixed string of s at i; the next index, -1 if
// malformed.
func strAt(s string, i int) (string, int) {
	if i < 0 {
		return "", -1
	}
	n, i := uvarintStr(s, i)
	if i < 0 || n > uint64(len(s)-i) {
		return "", -1
	}
	return s[i : i+int(n)], i + int(n)
}
