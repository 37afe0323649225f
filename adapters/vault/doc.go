// Package vault keeps OAuth tokens encrypted at rest in a NATS JetStream
// key-value bucket. It implements domain.TokenVault.
//
// The event log never holds a token, only fingerprints; the secrets
// themselves live here, one KV entry per connection, keyed by connection id.
//
// # Encryption
//
// Each value is the token set (access token, refresh token, token type,
// expiry and scopes) serialised as JSON and sealed with AES-256-GCM:
//
//	value = version (1 byte, currently 1) || nonce (12 bytes) || ciphertext+tag
//
// A fresh random nonce is drawn for every write. The connection id is the
// additional authenticated data, so a value copied or moved to another
// connection's key fails to decrypt instead of handing one connection's
// tokens to another. A value that fails to decrypt (wrong key, tampering,
// wrong connection) yields an error wrapping ErrUndecryptable that names the
// connection and nothing else: no error or log line produced by this package
// contains a token or key material.
//
// # Keys
//
// The 32-byte key comes from the TOKENLINE_VAULT_KEY environment variable
// (KeyFromEnv) or from a key file (LoadOrCreateKey) that is created on first
// use with mode 0600 and refused if group or others may read it. Losing the
// key loses the tokens: every connection then has to be authorised again.
// There is no key rotation yet; the version byte leaves room for it.
//
// # Storage
//
// The bucket (default "tokenline_tokens") uses file storage and keeps a
// history of one, so a Put replaces the previous value on disk rather than
// stacking revisions. Delete purges the key: the stream keeps only a purge
// marker without data, never an old revision.
package vault
