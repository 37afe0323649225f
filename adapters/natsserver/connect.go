package natsserver

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Reconnect settings used by Connect. A tokenline process must survive NATS
// restarts and fail-overs, so it never stops trying to reconnect.
const (
	// ReconnectWait is the pause between reconnect attempts to one server.
	ReconnectWait = 2 * time.Second
	// ReconnectJitter is the random extra pause added to ReconnectWait on
	// plain connections (ReconnectJitterTLS on TLS ones), so that many
	// clients do not reconnect in lock step.
	ReconnectJitter = 500 * time.Millisecond
	// ReconnectJitterTLS is the jitter for TLS connections.
	ReconnectJitterTLS = 2 * time.Second
	// DialTimeout bounds one attempt to open a connection to one server.
	DialTimeout = 5 * time.Second
)

// ConnectOptions configures a connection to an external NATS system. Every
// field is optional; file paths are read when Connect is called.
type ConnectOptions struct {
	// CredsFile is a NATS credentials file: either a .creds file (user JWT
	// and nkey seed, as written by nsc), passed to nats.UserCredentials, or a
	// file holding only a user nkey seed (such as the embedded server's
	// nats-reader.nk, or the output of `nk -gen user`), passed to
	// nats.NkeyOptionFromSeed.
	CredsFile string

	// InboxPrefix replaces the client's reply-subject prefix _INBOX
	// (nats.CustomInboxPrefix). tokenline's own connections use
	// natsserver.InboxPrefix so that readers, who may subscribe to
	// _INBOX.>, never see their replies. Empty keeps _INBOX.
	InboxPrefix string

	// TLSCert and TLSKey are the PEM client certificate and its private key
	// for mutual TLS (nats.ClientCert). Give both or neither.
	TLSCert string
	TLSKey  string

	// TLSCA is a PEM file of root certificates used to verify the server
	// (nats.RootCAs). Empty means the system roots. Setting any TLS field
	// makes the connection require TLS.
	TLSCA string

	// Name is the client connection name reported to the server; empty
	// means DefaultConnectionName.
	Name string
}

// Connect dials the external NATS server(s) at serverURL, a URL or a
// comma-separated list of URLs (for example "nats://n1:4222,nats://n2:4222").
//
// The connection reconnects forever (nats.MaxReconnects(-1)), waiting
// ReconnectWait plus jitter between attempts, and buffers publishes while
// disconnected; the initial connection however must succeed, or Connect
// fails. Install handlers such as SetDisconnectErrHandler on the returned
// connection to observe reconnects.
//
// ctx bounds the initial connection. Errors name the server with any user
// name, password or token in the URL replaced by "redacted", and never
// contain the contents of the credentials or key files.
func Connect(ctx context.Context, serverURL string, opts ConnectOptions) (*nats.Conn, error) {
	shown := redactURLs(serverURL)
	fail := func(err error) error {
		return &redactedError{
			msg: fmt.Sprintf("natsserver: connect to %s: %s", shown, scrub(err.Error(), serverURL)),
			err: err,
		}
	}
	if strings.TrimSpace(serverURL) == "" {
		return nil, errors.New("natsserver: connect: server URL is empty")
	}
	if err := ctx.Err(); err != nil {
		return nil, fail(err)
	}

	name := cmp.Or(opts.Name, DefaultConnectionName)
	natsOpts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(ReconnectWait),
		nats.ReconnectJitter(ReconnectJitter, ReconnectJitterTLS),
		nats.Timeout(DialTimeout),
	}
	if opts.CredsFile != "" {
		if err := checkFile("credentials file", opts.CredsFile); err != nil {
			return nil, fail(err)
		}
		auth, err := credsOption(opts.CredsFile)
		if err != nil {
			return nil, fail(err)
		}
		natsOpts = append(natsOpts, auth)
	}
	if opts.InboxPrefix != "" {
		natsOpts = append(natsOpts, nats.CustomInboxPrefix(opts.InboxPrefix))
	}
	if (opts.TLSCert == "") != (opts.TLSKey == "") {
		return nil, fail(errors.New("TLS client certificate and key must be given together"))
	}
	if opts.TLSCert != "" {
		if err := checkFile("TLS certificate", opts.TLSCert); err != nil {
			return nil, fail(err)
		}
		if err := checkFile("TLS key", opts.TLSKey); err != nil {
			return nil, fail(err)
		}
		natsOpts = append(natsOpts, nats.ClientCert(opts.TLSCert, opts.TLSKey))
	}
	if opts.TLSCA != "" {
		if err := checkFile("TLS CA file", opts.TLSCA); err != nil {
			return nil, fail(err)
		}
		natsOpts = append(natsOpts, nats.RootCAs(opts.TLSCA))
	}

	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := nats.Connect(serverURL, natsOpts...)
		done <- result{nc, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fail(r.err)
		}
		return r.nc, nil
	case <-ctx.Done():
		go func() { // the dial finishes on its own; do not leak its conn
			if r := <-done; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, fail(ctx.Err())
	}
}

// credsOption reads the credentials file to tell a .creds file (with a
// user JWT) from a bare nkey seed file. Errors never contain the content.
func credsOption(path string) (nats.Option, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	}
	defer clear(data)
	if bytes.Contains(data, []byte("BEGIN NATS USER JWT")) {
		return nats.UserCredentials(path), nil
	}
	if _, err := seedPublicKey(data); err != nil {
		return nil, fmt.Errorf("credentials file %s is neither a .creds file nor a user nkey seed: %v", path, err)
	}
	opt, err := nats.NkeyOptionFromSeed(path)
	if err != nil {
		return nil, fmt.Errorf("credentials file %s: %v", path, err)
	}
	return opt, nil
}

// checkFile gives a clear error for a missing or unreadable file before the
// NATS client turns it into a less specific one.
func checkFile(what, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if fi.IsDir() {
		return fmt.Errorf("%s %s is a directory", what, path)
	}
	return nil
}

// redactedError carries a message with secrets removed while still
// unwrapping to the original error for errors.Is and errors.As.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// RedactURLs is redactURLs for printing a NATS URL list (serve's banner):
// every URL's user information becomes "redacted".
func RedactURLs(list string) string { return redactURLs(list) }

// redactURLs replaces the user information of every URL in a comma-separated
// list by "redacted".
func redactURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if u, err := url.Parse(p); err == nil && u.User != nil {
			u.User = url.User("redacted")
			parts[i] = u.String()
		} else if at := strings.LastIndex(p, "@"); at >= 0 {
			parts[i] = "redacted" + p[at:]
		} else {
			parts[i] = p
		}
	}
	return strings.Join(parts, ",")
}

// scrub removes from msg the secrets found in the user information of the
// URLs in list (passwords, and the user part when it stands alone as a token),
// in case an underlying error quoted one. Secrets shorter than six characters
// are left alone: replacing them would mangle the message more than hide
// anything.
func scrub(msg, list string) string {
	for _, p := range strings.Split(list, ",") {
		p = strings.TrimSpace(p)
		var secrets []string
		if u, err := url.Parse(p); err == nil && u.User != nil {
			secrets = append(secrets, u.User.String())
			if pw, ok := u.User.Password(); ok {
				secrets = append(secrets, pw)
			} else {
				secrets = append(secrets, u.User.Username())
			}
		}
		// The user information as written, too: an error may quote it
		// undecoded (a password with %-escapes).
		if at := strings.LastIndex(p, "@"); at >= 0 {
			userinfo := p[:at]
			if i := strings.Index(userinfo, "://"); i >= 0 {
				userinfo = userinfo[i+3:]
			}
			secrets = append(secrets, userinfo)
			if _, pw, ok := strings.Cut(userinfo, ":"); ok {
				secrets = append(secrets, pw)
			}
		}
		for _, s := range secrets {
			if len(s) >= 6 {
				msg = strings.ReplaceAll(msg, s, "redacted")
			}
		}
	}
	return msg
}
