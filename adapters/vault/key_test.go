package vault

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestLoadOrCreateKeyCreates0600(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "vault.key")
	key, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatalf("LoadOrCreateKey: %v", err)
	}
	if len(key) != KeySize || bytes.Equal(key, make([]byte, KeySize)) {
		t.Fatalf("key of %d bytes, all zero: %v", len(key), bytes.Equal(key, make([]byte, KeySize)))
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if string(data) != hex.EncodeToString(key)+"\n" {
		t.Errorf("key file is not 64 hex digits and a newline (%d bytes)", len(data))
	}
	again, err := LoadOrCreateKey(path)
	if err != nil || !bytes.Equal(again, key) {
		t.Errorf("second load returned another key (%v)", err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("temporary files left behind: %d entries", len(entries))
	}
}

func TestLoadOrCreateKeyConcurrentCreatorsAgree(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vault.key")
	keys := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			k, err := LoadOrCreateKey(path)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		})
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if !bytes.Equal(k, keys[0]) {
			t.Fatal("concurrent creators got different keys")
		}
	}
}

func TestLoadOrCreateKeyRefusesOpenPermissions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vault.key")
	if _, err := LoadOrCreateKey(path); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o644, 0o604, 0o640, 0o660, 0o606} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadOrCreateKey(path)
		if err == nil || !strings.Contains(err.Error(), "chmod 600") || !strings.Contains(err.Error(), path) {
			t.Errorf("mode %04o: err = %v, want a refusal naming the file and the fix", mode, err)
		}
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(path); err != nil {
		t.Errorf("read-only owner file refused: %v", err)
	}
}

func TestLoadOrCreateKeyFormats(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	raw := bytes.Repeat([]byte{0xA7, 0x00, 0xFF, 0x10}, 8)
	for name, tc := range map[string]struct {
		data []byte
		want []byte
	}{
		"hex":          {[]byte(hex.EncodeToString(raw)), raw},
		"hex upper nl": {[]byte(strings.ToUpper(hex.EncodeToString(raw)) + "\r\n"), raw},
		"raw":          {raw, raw},
	} {
		got, err := LoadOrCreateKey(write(name, tc.data))
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("%s: %v", name, err)
		}
	}
	secret := "0123456789abcdef0123456789abcdef01234567"
	for name, data := range map[string][]byte{
		"short hex":  []byte(secret),
		"16-byte":    []byte(secret[:32]),
		"33 raw":     append(bytes.Clone(raw), 1),
		"31 raw":     raw[:31],
		"bad hex":    []byte(strings.Repeat("zz", 32)),
		"base64":     []byte(base64.StdEncoding.EncodeToString(raw)),
		"empty file": {},
	} {
		_, err := LoadOrCreateKey(write(name, data))
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if strings.Contains(err.Error(), secret[:16]) || strings.Contains(err.Error(), "zzzz") {
			t.Errorf("%s: error quotes the file: %v", name, err)
		}
	}
	if _, err := LoadOrCreateKey(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory as key file: %v", err)
	}
	if _, err := LoadOrCreateKey(""); err == nil {
		t.Error("empty path accepted")
	}
}

func TestKeyFromEnv(t *testing.T) {
	raw := bytes.Repeat([]byte{0xFB, 0xEF, 0x3E, 0x01}, 8) // base64 uses + and / (or - and _)
	for name, v := range map[string]string{
		"hex":        hex.EncodeToString(raw),
		"hex spaces": "  " + strings.ToUpper(hex.EncodeToString(raw)) + "\n",
		"std":        base64.StdEncoding.EncodeToString(raw),
		"raw std":    base64.RawStdEncoding.EncodeToString(raw),
		"url":        base64.URLEncoding.EncodeToString(raw),
		"raw url":    base64.RawURLEncoding.EncodeToString(raw),
	} {
		got, err := KeyFromEnv(v)
		if err != nil || !bytes.Equal(got, raw) {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, v := range map[string]string{
		"empty":     "  ",
		"16 bytes":  hex.EncodeToString(raw[:16]),
		"33 bytes":  base64.StdEncoding.EncodeToString(append(bytes.Clone(raw), 7)),
		"garbage":   "correct horse battery staple, not a key at all",
		"hex 63":    hex.EncodeToString(raw)[:63],
		"non-hex64": strings.Repeat("g", 64),
	} {
		_, err := KeyFromEnv(v)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if trimmed := strings.TrimSpace(v); len(trimmed) > 4 && strings.Contains(err.Error(), trimmed) {
			t.Errorf("%s: error quotes the value: %v", name, err)
		}
		if !strings.Contains(err.Error(), EnvKey) {
			t.Errorf("%s: error does not name %s: %v", name, EnvKey, err)
		}
	}
}

func TestDeriveKey(t *testing.T) {
	k := bytes.Repeat([]byte{3}, KeySize)
	a, err := DeriveKey(k, "tokenline checkpoints v1")
	if err != nil || len(a) != 32 {
		t.Fatalf("%d %v", len(a), err)
	}
	b, _ := DeriveKey(k, "tokenline checkpoints v1")
	c, _ := DeriveKey(k, "other purpose")
	if !bytes.Equal(a, b) || bytes.Equal(a, c) || bytes.Equal(a, k) {
		t.Fatal("derived keys: not deterministic, not separated by purpose, or the vault key itself")
	}
	if _, err := DeriveKey(k[:5], "x"); err == nil {
		t.Fatal("short vault key accepted")
	}
}
