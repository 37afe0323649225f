package events

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Signed checkpoints, in the manner of AWS CloudTrail's log file integrity
// validation: at a bounded interval an instance publishes, on the
// checkpoint stream (CheckpointSubject), a statement listing the chain head
// (connection, stream sequence, hash) of every connection whose head moved
// since the previous checkpoint, the event stream's last sequence it
// covers, and the hash of the previous checkpoint's statement, signed with
// Ed25519. A reader holding only the public key verifies the checkpoints
// (signatures, numbering, links) and then that every head they list is the
// hash of the event stored at that sequence: the history up to the last
// checkpoint is then the one that was signed.

// CheckpointSubject is the subject of the checkpoint messages (in their own
// stream, see jsstore.CheckpointStreamConfig).
const CheckpointSubject = "tokenline.checkpoints"

// CheckpointVersion is the statement's format version.
const CheckpointVersion = 1

// KeyPrefix starts a public key on the wire: "ed25519:" and the standard
// base64 of the 32-byte key.
const KeyPrefix = "ed25519:"

// Checkpoint is the signed statement.
type Checkpoint struct {
	Version int `json:"version"`
	// Number counts checkpoints from 1; Prev is the hash (FormatHash) of
	// the previous checkpoint's statement bytes, GenesisHash for number 1.
	Number uint64 `json:"number"`
	Prev   string `json:"prev"`
	// Stream is the event stream's name; UpTo the last stream sequence
	// the checkpoint covers.
	Stream string    `json:"stream"`
	UpTo   uint64    `json:"upto"`
	Time   time.Time `json:"time"`
	// Heads are the chain heads that moved since the previous checkpoint,
	// sorted by connection id.
	Heads []CheckpointHead `json:"heads"`
}

// CheckpointHead is one connection's chain head: the stream sequence of the
// last event in its chain and that event's hash (FormatHash).
type CheckpointHead struct {
	Connection string `json:"connection"`
	Seq        uint64 `json:"seq"`
	Head       string `json:"head"`
}

// SignedCheckpoint is the message body on CheckpointSubject: the statement
// exactly as signed, the public key that signed it and the signature
// (standard base64 of the 64-byte Ed25519 signature of Statement's bytes).
type SignedCheckpoint struct {
	Statement json.RawMessage `json:"statement"`
	Key       string          `json:"key"`
	Signature string          `json:"signature"`
}

// FormatKey writes a public key as "ed25519:<base64>".
func FormatKey(pub ed25519.PublicKey) string {
	return KeyPrefix + base64.StdEncoding.EncodeToString(pub)
}

// ParseKey reads what FormatKey writes (the prefix may be left out).
func ParseKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(strings.TrimSpace(s), KeyPrefix))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("events: a public key is %q and the base64 of %d bytes", KeyPrefix, ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// SignCheckpoint encodes and signs a statement. It returns the message body
// and the hash of the statement (the next checkpoint's Prev).
func SignCheckpoint(c Checkpoint, key ed25519.PrivateKey) ([]byte, [32]byte, error) {
	c.Version = CheckpointVersion
	st, err := json.Marshal(c)
	if err != nil {
		return nil, [32]byte{}, fmt.Errorf("events: checkpoint: %w", err)
	}
	sig := ed25519.Sign(key, st)
	body, err := json.Marshal(SignedCheckpoint{
		Statement: st,
		Key:       FormatKey(key.Public().(ed25519.PublicKey)),
		Signature: base64.StdEncoding.EncodeToString(sig),
	})
	return body, HashOf(st), err
}

// Checkpoint errors.
var (
	ErrCheckpointMalformed = errors.New("events: malformed checkpoint")
	ErrCheckpointSignature = errors.New("events: checkpoint signature does not verify")
)

// OpenCheckpoint reads a checkpoint message and verifies its signature
// with pub (nil: with the key the message names, which proves nothing
// about who signed; the key is returned so that the caller can say which).
// It returns the statement, the hash of its bytes and the signing key.
func OpenCheckpoint(b []byte, pub ed25519.PublicKey) (Checkpoint, [32]byte, ed25519.PublicKey, error) {
	var sc SignedCheckpoint
	var c Checkpoint
	if err := json.Unmarshal(b, &sc); err != nil || len(sc.Statement) == 0 {
		return c, [32]byte{}, nil, fmt.Errorf("%w: not a signed checkpoint", ErrCheckpointMalformed)
	}
	named, err := ParseKey(sc.Key)
	if err != nil {
		return c, [32]byte{}, nil, fmt.Errorf("%w: %v", ErrCheckpointMalformed, err)
	}
	if pub == nil {
		pub = named
	}
	sig, err := base64.StdEncoding.DecodeString(sc.Signature)
	if err != nil || !ed25519.Verify(pub, sc.Statement, sig) {
		return c, [32]byte{}, named, ErrCheckpointSignature
	}
	dec := json.NewDecoder(bytes.NewReader(sc.Statement))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil || c.Version != CheckpointVersion || c.Number == 0 {
		return c, [32]byte{}, named, fmt.Errorf("%w: statement is not a version %d checkpoint", ErrCheckpointMalformed, CheckpointVersion)
	}
	if _, ok := ParseHash(c.Prev); !ok {
		return c, [32]byte{}, named, fmt.Errorf("%w: prev is not a hash", ErrCheckpointMalformed)
	}
	for _, h := range c.Heads {
		if _, ok := ParseHash(h.Head); !ok || h.Seq == 0 {
			return c, [32]byte{}, named, fmt.Errorf("%w: head of %.40q is not a hash at a sequence", ErrCheckpointMalformed, h.Connection)
		}
	}
	return c, HashOf(sc.Statement), named, nil
}
