package vault

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/jsreq"
	"github.com/tokenline/tokenline/domain"
)

// DefaultAttemptsBucket holds open authorisation attempts.
const DefaultAttemptsBucket = "tokenline_attempts"

// ErrNoAttempt is domain.ErrNoAttempt: no open attempt has that key (never
// issued, already used, or long expired).
var ErrNoAttempt = domain.ErrNoAttempt

// attemptRecord is an open attempt as sealed in the bucket. Verifier is the
// PKCE verifier: secret, sealed at rest like tokens.
type attemptRecord struct {
	ConnectionID string    `json:"connection_id"`
	AttemptID    string    `json:"attempt_id"`
	Verifier     string    `json:"verifier"`
	ExpiresAt    time.Time `json:"expires_at"`
}

// Attempts implements domain.Attempts: it keeps open authorisation attempts in a JetStream KV bucket, so
// that the provider's callback may reach any instance sharing the stream.
// Keys are SHA-256 digests of the state value (the state itself is never
// stored); values are AES-256-GCM sealed with the key as associated data.
// Entries expire with the bucket's MaxAge. Take is single-use across every
// instance: it deletes the entry only if its revision is unchanged.
type Attempts struct {
	kv       jetstream.KeyValue
	js       jetstream.JetStream
	replicas int
	aead     cipher.AEAD
}

var attemptKeyRE = regexp.MustCompile(`^[a-f0-9]{64}$`)

// OpenAttempts creates or updates the attempts bucket; ttl bounds how long
// an entry is kept (a little more than the attempt lifetime).
func OpenAttempts(ctx context.Context, js jetstream.JetStream, key []byte, ttl time.Duration, replicas int) (*Attempts, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("vault: attempts: key is %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(slices.Clone(key))
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	if replicas <= 0 {
		replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      DefaultAttemptsBucket,
		Description: "tokenline: open authorisation attempts (PKCE verifiers), AES-256-GCM encrypted",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("vault: create or update KV bucket %q: %w", DefaultAttemptsBucket, err)
	}
	return &Attempts{kv: kv, js: js, replicas: replicas, aead: aead}, nil
}

// Put stores an attempt under key (hex SHA-256 of the state).
func (a *Attempts) Put(ctx context.Context, key string, at domain.Attempt) error {
	if !attemptKeyRE.MatchString(key) {
		return errors.New("vault: attempts: key must be a hex SHA-256 digest")
	}
	plain, err := json.Marshal(attemptRecord(at))
	if err != nil {
		return err
	}
	v := &Vault{aead: a.aead}
	sealed := v.seal(DefaultAttemptsBucket, key, plain)
	if err := jsreq.Do(ctx, func(ctx context.Context) error {
		_, err := a.kv.Put(ctx, key, sealed)
		return err
	}); err != nil {
		return fmt.Errorf("vault: attempts: put: %w", err)
	}
	return nil
}

// Take returns the attempt stored under key and removes it. Of concurrent
// Takes of one key (on any instance) exactly one succeeds.
func (a *Attempts) Take(ctx context.Context, key string) (domain.Attempt, error) {
	if !attemptKeyRE.MatchString(key) {
		return domain.Attempt{}, ErrNoAttempt
	}
	// Read from the stream's leader: a follower that is behind may not
	// have the attempt yet (the callback often follows its Put closely).
	e, err := latest(ctx, a.js, DefaultAttemptsBucket, a.replicas, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return domain.Attempt{}, ErrNoAttempt
	}
	if err != nil {
		return domain.Attempt{}, fmt.Errorf("vault: attempts: get: %w", err)
	}
	if err := a.purge(ctx, key, e.Sequence); err != nil {
		return domain.Attempt{}, err
	}
	v := &Vault{aead: a.aead}
	plain, err := v.open(DefaultAttemptsBucket, key, e.Data, e.Time)
	if err != nil {
		return domain.Attempt{}, err
	}
	var at attemptRecord
	if err := json.Unmarshal(plain, &at); err != nil {
		return domain.Attempt{}, fmt.Errorf("%w: attempt record", ErrUndecryptable)
	}
	return domain.Attempt(at), nil
}

// takeHeader carries a random token on the purge marker a Take writes, so
// that a retried purge can tell its own earlier, stored try from another
// instance's Take.
const takeHeader = "Tokenline-Take"

// purge writes the purge marker of key if the key's last revision is still
// rev (KV semantics of Purge with LastRevision), retrying across a leader
// election. It returns ErrNoAttempt if another Take purged it first.
func (a *Attempts) purge(ctx context.Context, key string, rev uint64) error {
	subject := "$KV." + DefaultAttemptsBucket + "." + key
	token := rand.Text()
	m := &nats.Msg{Subject: subject, Header: nats.Header{}}
	m.Header.Set(kvOperationHeader, "PURGE")
	m.Header.Set("Nats-Rollup", "sub")
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(rev, 10))
	m.Header.Set(takeHeader, token)
	tries := 0
	err := jsreq.Do(ctx, func(ctx context.Context) error {
		tries++
		_, err := a.js.PublishMsg(ctx, m)
		var apiErr *jetstream.APIError
		// 10164 (the leader could not check yet) is tried again by Do.
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			if tries > 1 {
				last, gerr := jsreq.LastMsg(ctx, a.js, "KV_"+DefaultAttemptsBucket, subject)
				if gerr == nil && last.Header.Get(takeHeader) == token {
					return nil // an earlier try was stored
				}
			}
			return ErrNoAttempt // another instance took it first
		}
		return err
	})
	if errors.Is(err, ErrNoAttempt) {
		return err
	}
	if err != nil {
		return fmt.Errorf("vault: attempts: take: %w", err)
	}
	return nil
}
