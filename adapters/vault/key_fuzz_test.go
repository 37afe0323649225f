package vault

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
)

// FuzzParseKeyFile checks the key-file parser on arbitrary file contents:
// it never panics, accepts only what decodes to exactly KeySize bytes, and
// its errors never quote the file's contents.
func FuzzParseKeyFile(f *testing.F) {
	f.Add([]byte(strings.Repeat("ab", KeySize) + "\n"))
	f.Add([]byte("  " + strings.Repeat("0F", KeySize) + "  \r\n"))
	f.Add(bytes.Repeat([]byte{0xff}, KeySize))
	f.Add([]byte(strings.Repeat("a", KeySize)))
	f.Add([]byte(strings.Repeat("g", 2*KeySize)))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := parseKeyFile(data)
		if err != nil {
			if key != nil {
				t.Fatal("error with a key")
			}
			if len(data) >= 8 && strings.Contains(err.Error(), string(data)) {
				t.Fatalf("error quotes the file: %v", err)
			}
			return
		}
		if len(key) != KeySize {
			t.Fatalf("key of %d bytes accepted", len(key))
		}
		text := bytes.TrimSpace(data)
		if hexed, herr := hex.DecodeString(string(text)); herr == nil && len(text) == 2*KeySize {
			if !bytes.Equal(hexed, key) {
				t.Fatal("hex key file decoded to another key")
			}
		} else if !bytes.Equal(data, key) {
			t.Fatal("raw key file accepted but the key differs from its bytes")
		}
	})
}

// FuzzKeyFromEnv checks TOKENLINE_VAULT_KEY parsing: exactly KeySize bytes
// or an error that never quotes the value.
func FuzzKeyFromEnv(f *testing.F) {
	k := bytes.Repeat([]byte{7}, KeySize)
	f.Add(hex.EncodeToString(k))
	f.Add(base64.StdEncoding.EncodeToString(k))
	f.Add(base64.RawURLEncoding.EncodeToString(k) + "\n")
	f.Add("not a key at all, but long enough to be quoted")
	f.Add("")
	f.Fuzz(func(t *testing.T, v string) {
		key, err := KeyFromEnv(v)
		if err != nil {
			if trimmed := strings.TrimSpace(v); len(trimmed) >= 8 && strings.Contains(err.Error(), trimmed) {
				t.Fatalf("error quotes the value: %v", err)
			}
			return
		}
		if len(key) != KeySize {
			t.Fatalf("key of %d bytes accepted", len(key))
		}
	})
}
