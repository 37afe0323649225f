package natsserver

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/tokenline/tokenline/adapters/secretfile"
	"io/fs"
	"path/filepath"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/tokenline/tokenline/events"
)

// Identity files in the data directory. Each holds one NATS user nkey seed
// (as written by `nk -gen user`), mode 0600. They are created by the first
// Start and reused after, so clients keep working across restarts.
const (
	// TokenlineSeedFile is tokenline's own identity: every right on the
	// embedded server (the administrator's key too).
	TokenlineSeedFile = "nats-tokenline.nk"
	// ReaderSeedFile is the identity for downstream consumers: see
	// ReaderPermissions.
	ReaderSeedFile = "nats-reader.nk"
)

// InboxPrefix is the reply-subject prefix of tokenline's own connections
// (nats.CustomInboxPrefix). Readers may subscribe to _INBOX.> (the default
// prefix of every NATS client) but not to this one, so they never see the
// replies tokenline receives, such as vault entries.
const InboxPrefix = "_INBOX_tokenline"

// DefaultStream is the stream the reader identity may consume; it is
// jsstore.DefaultStream.
const DefaultStream = "TOKENLINE"

// ReaderPermissions returns the rights of the reader identity on stream,
// whose subjects are events.SubjectAll. The reader may:
//
//   - subscribe to tokenline.conn.> (core NATS) and to _INBOX.> (replies);
//   - read the info and stored messages of the stream and of its
//     checkpoint stream (<stream>_CHECKPOINTS) ($JS.API.INFO,
//     $JS.API.STREAM.INFO, $JS.API.STREAM.MSG.GET, $JS.API.DIRECT.GET);
//   - create (or update) consumers on the event stream, read their info,
//     pull from them and acknowledge ($JS.API.CONSUMER.CREATE /
//     DURABLE.CREATE / INFO / MSG.NEXT, $JS.ACK, $JS.FC for push
//     consumers' flow control).
//
// Everything else is refused by the server: publishing events, any stream,
// key-value or object-store administration or access (the vault buckets
// among them), listing consumers (so tokenline's own, randomly named
// consumers stay unknown to readers) and deleting consumers. A reader that
// no longer needs a durable consumer lets it expire (InactiveThreshold) or
// asks the operator to delete it.
//
// No consumers on the checkpoint stream, and no subscription to its
// subject: a push consumer delivers to whatever subject its creator names,
// as the account, whenever someone subscribes to it, so a stream captures
// what it delivers. A reader's consumer on the checkpoint stream
// delivering to tokenline.conn.<id>, which readers may subscribe to, wrote
// checkpoints into the event stream; one on the event stream delivering to
// tokenline.checkpoints wrote events into the checkpoint stream; both
// refuse deletes and purges. A consumer on the event stream cannot deliver
// to its own subjects (the server refuses the cycle), and nobody
// subscribes to the subjects of the other streams. Checkpoints are read by
// direct get.
func ReaderPermissions(stream string) *server.Permissions {
	reads := func(st string) []string {
		return []string{
			"$JS.API.STREAM.INFO." + st,
			"$JS.API.STREAM.MSG.GET." + st,
			"$JS.API.DIRECT.GET." + st,
			"$JS.API.DIRECT.GET." + st + ".>",
		}
	}
	allow := []string{"$JS.API.INFO"}
	// The event stream: read, and consume with consumers of one's own.
	allow = append(allow, reads(stream)...)
	allow = append(allow,
		"$JS.API.CONSUMER.CREATE."+stream,
		"$JS.API.CONSUMER.CREATE."+stream+".>",
		"$JS.API.CONSUMER.DURABLE.CREATE."+stream+".*",
		"$JS.API.CONSUMER.INFO."+stream+".*",
		"$JS.API.CONSUMER.MSG.NEXT."+stream+".*",
		"$JS.ACK."+stream+".>",
		"$JS.ACK.*.*."+stream+".>", // the v2 reply format
		"$JS.FC."+stream+".>",
		"$JS.FC.*.*."+stream+".>",
	)
	// Its signed checkpoints (<stream>_CHECKPOINTS,
	// jsstore.CheckpointStreamConfig), which `tokenline verify` reads: read
	// only, by direct get.
	allow = append(allow, reads(stream+"_CHECKPOINTS")...)
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: allow},
		Subscribe: &server.SubjectPermission{Allow: []string{
			events.SubjectAll,
			"_INBOX.>",
		}},
	}
}

// identities loads the two seeds of dataDir, creating missing ones, and
// returns the nkey users the server accepts.
func identities(dataDir, stream string) ([]*server.NkeyUser, error) {
	own, err := loadOrCreateSeed(filepath.Join(dataDir, TokenlineSeedFile))
	if err != nil {
		return nil, err
	}
	reader, err := loadOrCreateSeed(filepath.Join(dataDir, ReaderSeedFile))
	if err != nil {
		return nil, err
	}
	return []*server.NkeyUser{
		{Nkey: own},
		{Nkey: reader, Permissions: ReaderPermissions(stream)},
	}, nil
}

// loadOrCreateSeed returns the public key of the user seed in the file at
// path, creating the file with a new seed (mode 0600) if it does not exist.
// An existing file must be a regular file that neither group nor others may
// access; errors never contain the seed.
func loadOrCreateSeed(path string) (string, error) {
	pub, err := readSeed(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return pub, err
	}
	if err := createSeed(path); err != nil {
		return "", err
	}
	return readSeed(path)
}

func readSeed(path string) (string, error) {
	data, err := secretfile.Read(path, "natsserver: identity file")
	if err != nil {
		return "", err
	}
	defer clear(data)
	pub, err := seedPublicKey(data)
	if err != nil {
		return "", fmt.Errorf("natsserver: identity file %s: %w", path, err)
	}
	return pub, nil
}

// seedPublicKey parses a user nkey seed (bare or in a decorated
// credentials file) and returns its public key.
func seedPublicKey(data []byte) (string, error) {
	kp, err := nkeys.ParseDecoratedNKey(data)
	if err != nil {
		return "", fmt.Errorf("not a NATS nkey seed (%d bytes)", len(data))
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return "", errors.New("not a NATS user nkey seed (want one starting with SU)")
	}
	if _, err := kp.Seed(); err != nil {
		return "", errors.New("holds a public key, not a seed")
	}
	return pub, nil
}

// createSeed writes a new user seed to path unless a file appeared there
// meanwhile (then that one wins), like the vault key file.
func createSeed(path string) error {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return fmt.Errorf("natsserver: create identity: %w", err)
	}
	defer kp.Wipe()
	seed, err := kp.Seed()
	if err != nil {
		return fmt.Errorf("natsserver: create identity: %w", err)
	}
	text := append(bytes.Clone(seed), '\n')
	clear(seed)
	defer clear(text)
	if err := secretfile.Create(path, text, "identity file"); err != nil {
		return fmt.Errorf("natsserver: %w", err)
	}
	return nil
}
