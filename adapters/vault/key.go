package vault

import (
	"bytes"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/tokenline/tokenline/adapters/secretfile"
	"io/fs"
	"strings"
)

// EnvKey is the name of the environment variable that may hold the vault
// key; decode its value with KeyFromEnv.
const EnvKey = "TOKENLINE_VAULT_KEY"

// LoadOrCreateKey returns the vault key stored in the file at path, creating
// the file with a new random key if it does not exist.
//
// Format: a new key file holds the key as 64 lowercase hex digits followed
// by a newline, so that it can be copied and backed up as text. When reading,
// surrounding whitespace is ignored, and a file of exactly 32 bytes that are
// not all hex digits is also accepted as the raw key. Anything else is
// refused with an error giving the length found, never the content.
//
// A new file is created with mode 0600 (its directory with 0700 if missing),
// written and synced under a temporary name and then linked into place, so
// that two processes starting at once agree on a single key and no reader
// ever sees a half-written file. An existing file must be a regular file that
// neither group nor others may access (mode & 0o077 == 0); otherwise
// LoadOrCreateKey refuses it and says how to fix it.
func LoadOrCreateKey(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("vault: key file path is empty")
	}
	key, err := readKeyFile(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if err := createKeyFile(path); err != nil {
		return nil, err
	}
	return readKeyFile(path)
}

// readKeyFile checks the file's type and permissions and parses it.
func readKeyFile(path string) ([]byte, error) {
	data, err := secretfile.Read(path, "vault: key file")
	if err != nil {
		return nil, err
	}
	defer clear(data)
	key, err := parseKeyFile(data)
	if err != nil {
		return nil, fmt.Errorf("vault: key file %s: %w", path, err)
	}
	return key, nil
}

// parseKeyFile decodes 64 hex digits (whitespace around them ignored) or 32
// raw bytes.
func parseKeyFile(data []byte) ([]byte, error) {
	if len(data) == KeySize && !isHex(data) {
		return bytes.Clone(data), nil
	}
	text := bytes.TrimSpace(data)
	if len(text) == 2*KeySize && isHex(text) {
		key := make([]byte, KeySize)
		if _, err := hex.Decode(key, text); err == nil {
			return key, nil
		}
	}
	if len(text) == KeySize && isHex(text) {
		return nil, fmt.Errorf("holds 32 hex digits (a 16-byte key?); want %d hex digits or %d raw bytes for AES-256", 2*KeySize, KeySize)
	}
	return nil, fmt.Errorf("holds %d bytes; want %d hex digits or %d raw bytes", len(data), 2*KeySize, KeySize)
}

func isHex(b []byte) bool {
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return len(b) > 0
}

// createKeyFile writes a new random key to path unless a file appeared there
// meanwhile (then that one wins).
func createKeyFile(path string) error {
	key := make([]byte, KeySize)
	rand.Read(key) // never fails (crypto/rand, Go 1.24+)
	text := []byte(hex.EncodeToString(key) + "\n")
	clear(key)
	defer clear(text)
	if err := secretfile.Create(path, text, "vault key file"); err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	return nil
}

// KeyFromEnv decodes the vault key from the value of the TOKENLINE_VAULT_KEY
// environment variable: 64 hex digits, or the base64 encoding (standard or
// URL alphabet, padded or not) of 32 bytes. Surrounding whitespace is
// ignored. Errors describe the expected form and the length found, never
// the value.
//
// Generate a value with: openssl rand -hex 32
func KeyFromEnv(value string) ([]byte, error) {
	v := strings.TrimSpace(value)
	if v == "" {
		return nil, fmt.Errorf("vault: %s is empty", EnvKey)
	}
	if len(v) == 2*KeySize {
		if key, err := hex.DecodeString(v); err == nil {
			return key, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if key, err := enc.DecodeString(v); err == nil && len(key) == KeySize {
			return key, nil
		}
	}
	return nil, fmt.Errorf("vault: %s: want %d hex digits or the base64 of %d bytes, got %d characters", EnvKey, 2*KeySize, KeySize, len(v))
}

// DeriveKey derives a 32-byte key for purpose from the vault key with
// HKDF-SHA-256 (RFC 5869; no salt, purpose as the info), so that other
// secrets (the projections' checkpoint MAC key) need no key file of their
// own and reveal nothing about the vault key.
func DeriveKey(vaultKey []byte, purpose string) ([]byte, error) {
	if len(vaultKey) != KeySize {
		return nil, fmt.Errorf("vault: derive key: vault key is %d bytes, want %d", len(vaultKey), KeySize)
	}
	return hkdf.Key(sha256.New, vaultKey, nil, purpose, 32)
}
