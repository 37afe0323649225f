package vault

import (
	"cmp"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/jsreq"
	"github.com/tokenline/tokenline/domain"
)

// DefaultBucket is the KV bucket used when Config.Bucket is empty.
const DefaultBucket = "tokenline_tokens"

// KeySize is the length of a vault key in bytes (AES-256).
const KeySize = 32

// formatVersion is the first byte of every value written now (format 2:
// bound to bucket, key and the time it was sealed); formatV1 values (bound
// to the key only) are still read.
const (
	formatVersion byte = 2
	formatV1      byte = 1
)

const (
	nonceSize = 12 // standard GCM nonce
	tagSize   = 16 // GCM authentication tag
)

// Errors returned (wrapped) by the vault; test with errors.Is.
var (
	// ErrUndecryptable means a stored value could not be decrypted: the
	// vault key differs from the one that wrote it, the value was altered, or
	// it was copied from another connection's key.
	ErrUndecryptable = errors.New("vault: cannot decrypt stored tokens (wrong vault key, or the value was altered or copied from another connection)")
	// ErrReplayed means a stored value was sealed long before the server
	// stored it: an older token set written into the bucket again. It is
	// never adopted or presented.
	ErrReplayed = errors.New("vault: refusing a value stored long after it was sealed")
	// ErrInvalidConnectionID means a connection id cannot be used as a key.
	ErrInvalidConnectionID = errors.New("vault: invalid connection id")
)

// validID accepts the connection ids tokenline issues (UUIDs) and, more
// generally, one NATS subject token of 1 to 128 letters, digits, '-' and
// '_': no dots, wildcards, spaces or other separators that would change the
// key's meaning. (A loop rather than the regular expression
// ^[A-Za-z0-9_-]{1,128}$, which took about 2 us a call: a refresh checks it
// twice on its critical path.)
func validID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// Config configures a Vault.
type Config struct {
	// Bucket is the JetStream KV bucket name; empty means DefaultBucket.
	Bucket string
	// Replicas is the bucket's replication factor in a NATS cluster; 0
	// means 1. Use 3 on a three-node cluster.
	Replicas int
	// Key is the 32-byte AES-256 key (see LoadOrCreateKey and KeyFromEnv).
	// Open copies it; the caller may clear its slice afterwards.
	Key []byte
}

// Vault stores token sets encrypted in a JetStream KV bucket. It implements
// domain.TokenVault and is safe for concurrent use.
type Vault struct {
	now      func() time.Time // the sealing clock; time.Now
	kv       jetstream.KeyValue
	js       jetstream.JetStream
	bucket   string
	replicas int
	aead     cipher.AEAD

	replyMu sync.Mutex
	reply   *replySub // Prefetch's answers (prefetch.go); nil until the first

	// puts sends Put's publishes on the bucket's subject directly (nil:
	// through kv.Put, for a JetStream API under a domain or prefix).
	puts *jsreq.Replies
}

var _ domain.TokenVault = (*Vault)(nil)

// Open creates the KV bucket, or updates its configuration if it exists
// (file storage, history 1, cfg.Replicas replicas), and returns a vault that
// encrypts with cfg.Key. Open does not check that the key matches values
// already stored; a wrong key shows up as ErrUndecryptable on Get.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Vault, error) {
	if js == nil {
		return nil, errors.New("vault: open: JetStream is nil")
	}
	if len(cfg.Key) != KeySize {
		return nil, fmt.Errorf("vault: open: key is %d bytes, want %d (AES-256)", len(cfg.Key), KeySize)
	}
	cfg.Bucket = cmp.Or(cfg.Bucket, DefaultBucket)
	cfg.Replicas = cmp.Or(cfg.Replicas, 1)
	if cfg.Replicas < 0 {
		return nil, fmt.Errorf("vault: open: replicas %d is negative", cfg.Replicas)
	}
	block, err := aes.NewCipher(slices.Clone(cfg.Key))
	if err != nil {
		return nil, fmt.Errorf("vault: open: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("vault: open: %w", err)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "tokenline: OAuth tokens, AES-256-GCM encrypted",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("vault: create or update KV bucket %q: %w", cfg.Bucket, err)
	}
	v := &Vault{kv: kv, js: js, bucket: cfg.Bucket, replicas: cfg.Replicas, aead: aead}
	if nc := js.Conn(); nc != nil && jsreq.DefaultAPI(js) {
		v.puts = jsreq.NewReplies(nc)
	}
	return v, nil
}

// record is the serialised form of domain.Tokens (whose own MarshalJSON is
// redacted on purpose). It only ever exists in plaintext in memory.
type record struct {
	AccessToken  string    `json:"access_token,omitempty"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	TokenType    string    `json:"token_type,omitempty"`
	Expiry       time.Time `json:"expiry,omitzero"`
	Scopes       []string  `json:"scopes,omitempty"`
}

// Put encrypts t and stores it as the connection's token set, replacing the
// previous one entirely: access and refresh token change together, and a
// field left empty in t is empty afterwards. A token set without either
// token is refused (use Delete). Expiry is stored in UTC.
func (v *Vault) Put(ctx context.Context, connectionID string, t domain.Tokens) error {
	if err := validateID(connectionID); err != nil {
		return err
	}
	if t.AccessToken == "" && t.RefreshToken == "" {
		return fmt.Errorf("vault: put tokens of connection %s: neither an access nor a refresh token given", connectionID)
	}
	plain, err := marshalRecord(&record{
		AccessToken:  t.AccessToken,
		RefreshToken: t.RefreshToken,
		TokenType:    t.TokenType,
		Expiry:       t.Expiry.UTC(),
		Scopes:       t.Scopes,
	})
	if err != nil { // cannot happen for these field types; never quote the value
		return fmt.Errorf("vault: put tokens of connection %s: encode failed", connectionID)
	}
	value := v.seal(v.bucket, connectionID, plain)
	clear(plain)
	if err := jsreq.Do(ctx, func(ctx context.Context) error { return v.put(ctx, connectionID, value) }); err != nil {
		return fmt.Errorf("vault: put tokens of connection %s: %w", connectionID, err)
	}
	return nil
}

// put is kv.Put without jetstream's Publish around the request: the
// bucket's subject ($KV.<bucket>.<key>, which kv.Put publishes to when the
// JetStream API has the default prefix and the bucket is no mirror, as
// Open makes it) published by jsreq.Replies, its acknowledgement read by
// jsreq.ParsePubAck, with the errors Publish returns. A refresh writes the
// vault on its critical path (BenchmarkRefreshCycle).
func (v *Vault) put(ctx context.Context, key string, value []byte) error {
	if v.puts == nil {
		_, err := v.kv.Put(ctx, key, value)
		return err
	}
	resp, err := v.puts.Request(ctx, &nats.Msg{Subject: "$KV." + v.bucket + "." + key, Data: value})
	if errors.Is(err, nats.ErrNoResponders) {
		return jetstream.ErrNoStreamResponse
	}
	if err != nil {
		return err
	}
	_, err = jsreq.ParsePubAck(resp.Data, "KV_"+v.bucket)
	return err
}

// Get returns the connection's token set, as the bucket's stream leader has
// it: a follower that is behind could return a token set already replaced
// (on a provider that rotates refresh tokens, one that no longer works). It
// returns an error wrapping
// domain.ErrNoTokens if none is stored (never written, or deleted), and one
// wrapping ErrUndecryptable if the stored value cannot be decrypted with
// this vault's key for this connection.
func (v *Vault) Get(ctx context.Context, connectionID string) (domain.Tokens, error) {
	if err := validateID(connectionID); err != nil {
		return domain.Tokens{}, err
	}
	entry, err := latest(ctx, v.js, v.bucket, v.replicas, connectionID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return domain.Tokens{}, noTokens(connectionID)
	}
	if err != nil {
		return domain.Tokens{}, fmt.Errorf("vault: get tokens of connection %s: %w", connectionID, err)
	}
	return v.decode(connectionID, entry)
}

// decode opens a stored token record.
func (v *Vault) decode(connectionID string, entry *jsreq.Msg) (domain.Tokens, error) {
	plain, err := v.open(v.bucket, connectionID, entry.Data, entry.Time)
	if err != nil {
		return domain.Tokens{}, err
	}
	var r record
	err = unmarshalRecord(plain, &r)
	clear(plain)
	if err != nil { // authenticated yet unparsable: never quote the plaintext
		return domain.Tokens{}, fmt.Errorf("vault: tokens of connection %s: decrypted value is not a token record", connectionID)
	}
	return domain.Tokens{
		AccessToken:  r.AccessToken,
		RefreshToken: r.RefreshToken,
		TokenType:    r.TokenType,
		Expiry:       r.Expiry,
		Scopes:       r.Scopes,
	}, nil
}

// Delete destroys the connection's token set. It purges the key, so the
// bucket keeps no earlier revision of the value, only a purge marker.
// Deleting a connection without tokens is not an error.
func (v *Vault) Delete(ctx context.Context, connectionID string) error {
	if err := validateID(connectionID); err != nil {
		return err
	}
	if err := jsreq.Do(ctx, func(ctx context.Context) error { return v.kv.Purge(ctx, connectionID) }); err != nil {
		return fmt.Errorf("vault: delete tokens of connection %s: %w", connectionID, err)
	}
	return nil
}

// Take returns the connection's tokens and purges them, once: the purge is
// conditional on the revision read (KV last-revision check), so of
// concurrent Takes one succeeds and tokens Put in between are read and
// taken instead. Unreadable tokens are purged and their error returned.
func (v *Vault) Take(ctx context.Context, connectionID string) (domain.Tokens, error) {
	if err := validateID(connectionID); err != nil {
		return domain.Tokens{}, err
	}
	for try := 0; ; try++ {
		entry, err := latest(ctx, v.js, v.bucket, v.replicas, connectionID)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return domain.Tokens{}, fmt.Errorf("%w %s", domain.ErrNoTokens, connectionID)
		}
		if err != nil {
			return domain.Tokens{}, fmt.Errorf("vault: take tokens of connection %s: %w", connectionID, err)
		}
		t, oerr := v.decode(connectionID, entry)
		err = jsreq.Do(ctx, func(ctx context.Context) error {
			return v.kv.Purge(ctx, connectionID, jetstream.LastRevision(entry.Sequence))
		})
		switch {
		case err == nil && oerr != nil:
			return domain.Tokens{}, oerr
		case err == nil:
			return t, nil
		case wrongRevision(err) && try < 8:
			continue // changed since it was read (or taken by another instance): read again
		}
		return domain.Tokens{}, fmt.Errorf("vault: take tokens of connection %s: %w", connectionID, err)
	}
}

// wrongRevision reports whether a conditional write failed because the key
// changed since the revision it named.
func wrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// seal encrypts plain for key in bucket (format 2):
//
//	2 || sealed-at (8 bytes, Unix nanoseconds, big endian) || nonce || ciphertext
//
// with the associated data binding the ciphertext to the format, the
// bucket, the key and the time it was sealed. A value copied to another
// key or bucket does not open; one written again later (an older token set
// replayed into the bucket) is refused by open, which compares the sealed
// time with the time the server stored the value.
func (v *Vault) seal(bucket, key string, plain []byte) []byte {
	out := make([]byte, 1+8+nonceSize, 1+8+nonceSize+len(plain)+tagSize)
	out[0] = formatVersion
	now := time.Now
	if v.now != nil {
		now = v.now
	}
	binary.BigEndian.PutUint64(out[1:9], uint64(now().UnixNano()))
	nonce := out[9 : 9+nonceSize]
	rand.Read(nonce) // never fails (crypto/rand, Go 1.24+)
	return v.aead.Seal(out, nonce, plain, sealAD(bucket, key, out[1:9]))
}

// sealAD is the associated data of a format 2 value.
func sealAD(bucket, key string, sealedAt []byte) []byte {
	ad := make([]byte, 0, len("tokenline-vault/2")+len(bucket)+len(key)+3+8)
	ad = append(ad, "tokenline-vault/2"...)
	ad = append(ad, 0)
	ad = append(ad, bucket...)
	ad = append(ad, 0)
	ad = append(ad, key...)
	ad = append(ad, 0)
	return append(ad, sealedAt...)
}

// MaxSealAge is how much later than it was sealed a value may have been
// stored (the server's timestamp) before open refuses it as replayed. It
// covers a write retried across a leader election and clock skew between
// an instance and the NATS servers.
const MaxSealAge = 10 * time.Minute

// open reverses seal for key in bucket, checking the format, the binding
// and, when storedAt (the server's timestamp of the value) is known, that
// the value was stored when it was sealed. Values of format 1 (connection
// id only as associated data, written before format 2) still open.
func (v *Vault) open(bucket, key string, value []byte, storedAt time.Time) ([]byte, error) {
	if len(value) == 0 {
		return nil, fmt.Errorf("%w: %s: empty value", ErrUndecryptable, key)
	}
	switch value[0] {
	case formatV1:
		if len(value) < 1+nonceSize+tagSize {
			return nil, fmt.Errorf("%w: %s: value too short (%d bytes)", ErrUndecryptable, key, len(value))
		}
		plain, err := v.aead.Open(nil, value[1:1+nonceSize], value[1+nonceSize:], []byte(key))
		if err != nil {
			return nil, fmt.Errorf("%w: %s", ErrUndecryptable, key)
		}
		return plain, nil
	case formatVersion:
	default:
		return nil, fmt.Errorf("%w: %s: unknown format version %d", ErrUndecryptable, key, value[0])
	}
	if len(value) < 1+8+nonceSize+tagSize {
		return nil, fmt.Errorf("%w: %s: value too short (%d bytes)", ErrUndecryptable, key, len(value))
	}
	plain, err := v.aead.Open(nil, value[9:9+nonceSize], value[9+nonceSize:], sealAD(bucket, key, value[1:9]))
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrUndecryptable, key)
	}
	sealedAt := time.Unix(0, int64(binary.BigEndian.Uint64(value[1:9])))
	if !storedAt.IsZero() && storedAt.Sub(sealedAt) > MaxSealAge {
		clear(plain)
		return nil, fmt.Errorf("%w: %s: stored %s after it was sealed (an older value written again?)", ErrReplayed, key, storedAt.Sub(sealedAt).Round(time.Second))
	}
	return plain, nil
}

// validateID checks that a connection id is usable as a KV key.
func validateID(id string) error {
	if validID(id) {
		return nil
	}
	if id == "" {
		return fmt.Errorf("%w: empty", ErrInvalidConnectionID)
	}
	shown := id
	if len(shown) > 64 {
		shown = shown[:64] + "..."
	}
	return fmt.Errorf("%w %q: want 1 to 128 letters, digits, '-' or '_' (a UUID)", ErrInvalidConnectionID, shown)
}

// latest returns the current value of key in the KV bucket as the bucket's
// stream leader has it, or an error wrapping jetstream.ErrKeyNotFound if
// the key has none (never written, deleted or purged). KeyValue.Get uses a
// direct get, which any replica may answer, however far behind; a bucket
// with one replica is its own leader (jsreq.Latest).
func latest(ctx context.Context, js jetstream.JetStream, bucket string, replicas int, key string) (*jsreq.Msg, error) {
	m, err := jsreq.Latest(ctx, js, "KV_"+bucket, replicas, "$KV."+bucket+"."+key)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, jetstream.ErrKeyNotFound
	}
	if err != nil {
		return nil, err
	}
	if isDeletion(m) {
		return nil, jetstream.ErrKeyNotFound
	}
	return m, nil
}

// isDeletion reports whether a KV message is a delete or purge marker.
func isDeletion(m *jsreq.Msg) bool {
	switch m.Header.Get(kvOperationHeader) {
	case "DEL", "PURGE":
		return true
	}
	return false
}

// noTokens is Get's error for a connection without a token set.
func noTokens(connectionID string) error {
	return fmt.Errorf("%w %s", domain.ErrNoTokens, connectionID)
}

// kvOperationHeader marks KV delete and purge markers.
const kvOperationHeader = "KV-Operation"
