package webhook

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// secretRecord is what the secrets bucket holds per subscription, sealed:
// the current secret and, for a grace period after a rotation, the
// previous one (deliveries are signed with both meanwhile, as the Standard
// Webhooks spec allows, so receivers can switch without losing messages).
type secretRecord struct {
	Current       string    `json:"current"`
	Previous      string    `json:"previous,omitempty"`
	PreviousUntil time.Time `json:"previous_until,omitzero"`
}

// secrets is the encrypted key-value bucket of signing secrets: AES-256-GCM
// under a key derived from the vault key, the subscription id as associated
// data (a value copied to another subscription does not open).
type secrets struct {
	kv   jetstream.KeyValue
	aead cipher.AEAD
}

func openSecrets(ctx context.Context, js jetstream.JetStream, bucket string, replicas int, key []byte) (*secrets, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("webhook: secrets key is %d bytes, want 32", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: bucket, Description: "tokenline: webhook signing secrets, AES-256-GCM encrypted",
		History: 1, Storage: jetstream.FileStorage, Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("webhook: create or update KV bucket %q: %w", bucket, err)
	}
	return &secrets{kv: kv, aead: aead}, nil
}

func secretAD(id string) []byte { return append([]byte("tokenline-webhook-secret/1\x00"), id...) }

func (s *secrets) put(ctx context.Context, id string, r secretRecord) error {
	plain, err := json.Marshal(r)
	if err != nil {
		return err
	}
	defer clear(plain)
	nonce := make([]byte, s.aead.NonceSize())
	_, _ = rand.Read(nonce)
	if _, err := s.kv.Put(ctx, id, s.aead.Seal(nonce, nonce, plain, secretAD(id))); err != nil {
		return fmt.Errorf("webhook: store secret: %w", err)
	}
	return nil
}

// ErrNoSecret says a subscription's secret is missing or does not open.
var ErrNoSecret = errors.New("webhook: signing secret missing or undecryptable")

func (s *secrets) get(ctx context.Context, id string) (secretRecord, error) {
	e, err := s.kv.Get(ctx, id)
	if err != nil {
		return secretRecord{}, fmt.Errorf("%w: %s: %v", ErrNoSecret, id, err)
	}
	v := e.Value()
	n := s.aead.NonceSize()
	if len(v) < n {
		return secretRecord{}, fmt.Errorf("%w: %s", ErrNoSecret, id)
	}
	plain, err := s.aead.Open(nil, v[:n], v[n:], secretAD(id))
	if err != nil {
		return secretRecord{}, fmt.Errorf("%w: %s", ErrNoSecret, id)
	}
	defer clear(plain)
	var r secretRecord
	if err := json.Unmarshal(plain, &r); err != nil {
		return secretRecord{}, fmt.Errorf("%w: %s", ErrNoSecret, id)
	}
	return r, nil
}

func (s *secrets) delete(ctx context.Context, id string) error {
	if err := s.kv.Delete(ctx, id); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return err
	}
	return nil
}

// keys returns the HMAC keys to sign with now: the current secret's, and
// the previous one's during its grace period.
func (r secretRecord) keys(now time.Time) ([][]byte, error) {
	k, err := SecretKey(r.Current)
	if err != nil {
		return nil, err
	}
	out := [][]byte{k}
	if r.Previous != "" && now.Before(r.PreviousUntil) {
		if p, err := SecretKey(r.Previous); err == nil {
			out = append(out, p)
		}
	}
	return out, nil
}
