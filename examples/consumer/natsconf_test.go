package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/natsserver"
	"github.com/tokenline/tokenline/adapters/porttest"
	"github.com/tokenline/tokenline/adapters/vault"
	"github.com/tokenline/tokenline/cmd/tokenline/app"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// confFile is the configuration docs/operations.md gives for --nats-url.
const confFile = "../../docs/nats-server.conf"

// newSeed writes a new user nkey seed file (as `nk -gen user` does) and
// returns its path and public key.
func newSeed(t *testing.T, name string) (string, string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, append(seed, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, pub
}

// violationLog records the server's permission violation log lines; each
// names the client's nkey.
type violationLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *violationLog) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if strings.Contains(msg, "Violation") {
		l.mu.Lock()
		l.lines = append(l.lines, msg)
		l.mu.Unlock()
	}
}
func (l *violationLog) Noticef(string, ...any) {}
func (l *violationLog) Warnf(string, ...any)   {}
func (l *violationLog) Fatalf(string, ...any)  {}
func (l *violationLog) Debugf(string, ...any)  {}
func (l *violationLog) Tracef(string, ...any)  {}

func (l *violationLog) matching(s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}

// startConfigured starts a nats-server from docs/nats-server.conf. Only the
// listen port (random) and the store directory (the test's) are changed.
func startConfigured(t *testing.T) (url, tokenlineSeed, tokenlinePub, readerSeed string, log *violationLog) {
	t.Helper()
	tokenlineSeed, tokenlinePub = newSeed(t, "tokenline.nk")
	readerSeed, readerPub := newSeed(t, "reader.nk")
	t.Setenv("TOKENLINE_NKEY", tokenlinePub)
	t.Setenv("TOKENLINE_READER_NKEY", readerPub)
	opts, err := server.ProcessConfigFile(confFile)
	if err != nil {
		t.Fatalf("%s: %v", confFile, err)
	}
	opts.Port, opts.StoreDir, opts.NoSigs = server.RANDOM_PORT, t.TempDir(), true
	if opts.Host != "127.0.0.1" || !opts.JetStream || len(opts.Nkeys) != 2 || len(opts.Users) != 0 || opts.NoAuthUser != "" {
		t.Fatalf("%s: host %q, jetstream %v, %d nkey users, %d other users, no-auth user %q", confFile, opts.Host, opts.JetStream, len(opts.Nkeys), len(opts.Users), opts.NoAuthUser)
	}
	// The reader has exactly the embedded server's reader rights.
	for _, u := range opts.Nkeys {
		if u.Nkey != readerPub {
			continue
		}
		want := natsserver.ReaderPermissions(natsserver.DefaultStream)
		if !slices.Equal(u.Permissions.Publish.Allow, want.Publish.Allow) || !slices.Equal(u.Permissions.Subscribe.Allow, want.Subscribe.Allow) ||
			u.Permissions.Publish.Deny != nil || u.Permissions.Subscribe.Deny != nil || u.Permissions.Response != nil {
			t.Fatalf("%s: reader permissions %+v %+v differ from natsserver.ReaderPermissions %+v %+v",
				confFile, u.Permissions.Publish, u.Permissions.Subscribe, want.Publish, want.Subscribe)
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	log = &violationLog{}
	ns.SetLoggerV2(log, false, false, false)
	go ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return ns.ClientURL(), tokenlineSeed, tokenlinePub, readerSeed, log
}

// tokenline and the example consumer against a nats-server configured with
// docs/nats-server.conf: tokenline does its whole job with its user (not one
// permission violation), the reader consumes every event, and each write or
// administrative request of the reader is refused.
func TestLeastPrivilegeConfig(t *testing.T) {
	url, tokenlineSeed, tokenlinePub, readerSeed, log := startConfigured(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	if nc, err := nats.Connect(url); err == nil {
		nc.Close()
		t.Fatal("anonymous client accepted")
	}

	dataDir := t.TempDir()
	start := func() *app.Main {
		t.Helper()
		m := app.NewMain()
		m.Config.DataDir = dataDir
		m.Config.NATSURL, m.Config.NATSCreds = url, tokenlineSeed
		m.Config.HTTPAddr = "127.0.0.1:0"
		m.Config.SandboxConsent = "approve"
		m.Config.SnapshotEvery = 2 // exercise the snapshot object store
		m.Config.LogLevel = "error"
		m.LogOutput = &porttest.LogBuffer{}
		if err := m.Run(ctx); err != nil {
			t.Fatalf("tokenline with its least-privilege user: %v", err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	m := start()

	// The lifecycle: create, authorise (attempts KV, vault), refresh twice
	// (vault updates, snapshots), update, delete (vault purge).
	c, err := m.Lifecycle.Create(ctx, "sandbox", []string{"users:read"}, map[string]string{"team": "a"})
	if err != nil {
		t.Fatal(err)
	}
	authURL, err := m.Lifecycle.StartAuthorisation(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(authURL) // the sandbox approves and redirects to the callback
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if tok, _, err := m.Lifecycle.Token(ctx, c.ID); err != nil || tok == "" {
		t.Fatalf("token after authorisation: %v", err)
	}
	for range 2 {
		if err := m.Lifecycle.Refresh(ctx, c.ID, domain.TriggerManual); err != nil {
			t.Fatalf("refresh: %v", err)
		}
	}
	if _, err := m.Lifecycle.Update(ctx, c.ID, nil, map[string]string{"team": "b"}); err != nil {
		t.Fatal(err)
	}
	gone, err := m.Lifecycle.Create(ctx, "sandbox", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Lifecycle.Delete(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	lastSeq := func() int {
		t.Helper()
		info, err := m.Store.Stream().Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return int(info.State.LastSeq)
	}
	// A restart: the stream is updated, snapshots and positions read back.
	m.Close()
	m = start()
	// (The restarted in-process sandbox does not know the old grants, so
	// no refresh here.)
	if tok, _, err := m.Lifecycle.Token(ctx, c.ID); err != nil || tok == "" {
		t.Fatalf("token after a restart: %v", err)
	}
	if _, err := m.Lifecycle.Update(ctx, c.ID, nil, map[string]string{"team": "c"}); err != nil {
		t.Fatalf("update after a restart: %v", err)
	}
	want := lastSeq()
	if want < 8 {
		t.Fatalf("only %d events", want)
	}

	// The example consumer, as the reader.
	auth, err := nats.NkeyOptionFromSeed(readerSeed)
	if err != nil {
		t.Fatal(err)
	}
	refused := make(chan string, 64)
	reader, err := nats.Connect(url, auth, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			refused <- err.Error()
		}
	}))
	if err != nil {
		t.Fatalf("reader: %v", err)
	}
	defer reader.Close()
	var out bytes.Buffer
	if err := Run(ctx, reader, Stream, "reader-example", &out, want); err != nil {
		t.Fatalf("example consumer as the reader: %v", err)
	}
	if got := seqs(t, out.String()); len(got) != want || got[want-1] != uint64(want) {
		t.Fatalf("the reader got %d events, want %d:\n%s", len(got), want, out.String())
	}
	if !strings.Contains(out.String(), c.ID+" refresh.succeeded") || !strings.Contains(out.String(), gone.ID+" connection.deleted") ||
		!strings.Contains(out.String(), c.ID+" connection.updated") {
		t.Errorf("consumer output:\n%s", out.String())
	}

	// Every write or administrative request of the reader is refused.
	inbox := reader.NewRespInbox()
	for _, req := range []struct{ subject, body string }{
		{events.Subject(c.ID), `{"specversion":"1.0","id":"forged","source":"evil","type":"tokenline.connection.deleted","subject":"` + c.ID + `","data":{}}`},
		{"$JS.API.STREAM.UPDATE.TOKENLINE", `{"name":"TOKENLINE","subjects":["tokenline.conn.*"],"max_age":2000000000}`},
		{"$JS.API.STREAM.DELETE.TOKENLINE", ""},
		{"$JS.API.STREAM.PURGE.TOKENLINE", ""},
		{"$JS.API.STREAM.DELETE.KV_" + vault.DefaultBucket, ""},
		{"$JS.API.DIRECT.GET.KV_" + vault.DefaultBucket + ".$KV." + vault.DefaultBucket + "." + c.ID, ""},
		{"$JS.API.STREAM.MSG.GET.KV_" + vault.DefaultBucket, `{"last_by_subj":"$KV.` + vault.DefaultBucket + `.` + c.ID + `"}`},
		{"$KV." + vault.DefaultBucket + "." + c.ID, "garbage"},
		{"$JS.API.STREAM.DELETE.OBJ_" + jsstore.SnapshotsBucket, ""},
		{"$JS.API.CONSUMER.DELETE.TOKENLINE.reader-example", ""},
		{"$JS.API.CONSUMER.LIST.TOKENLINE", ""},
	} {
		if err := reader.PublishRequest(req.subject, inbox, []byte(req.body)); err != nil {
			t.Fatal(err)
		}
		if err := reader.Flush(); err != nil {
			t.Fatal(err)
		}
		wantErr := `Publish to "` + req.subject + `"`
		select {
		case got := <-refused:
			if !strings.Contains(got, wantErr) {
				t.Fatalf("refused %s, want %s", got, wantErr)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("the reader's request to %s was not refused", req.subject)
		}
	}
	if _, err := reader.SubscribeSync("$KV." + vault.DefaultBucket + ".>"); err != nil {
		t.Fatal(err)
	}
	if err := reader.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-refused:
		if !strings.Contains(got, "Subscription to \"$KV.") {
			t.Fatalf("refused %s", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a subscription to the vault's subjects was not refused")
	}

	// Nothing changed, and tokenline never hit a limit of its user.
	if n := lastSeq(); n != want {
		t.Errorf("the stream has %d events, want %d", n, want)
	}
	js, err := jetstream.New(m.Conn)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := js.Stream(ctx, "TOKENLINE"); err != nil || st.CachedInfo().Config.MaxAge != 0 {
		t.Errorf("stream after the reader: %v", err)
	}
	if tok, _, err := m.Lifecycle.Token(ctx, c.ID); err != nil || tok == "" {
		t.Errorf("token after the reader: %v", err)
	}
	if v := log.matching("nkey:" + tokenlinePub); len(v) > 0 {
		t.Errorf("tokenline's user lacks rights:\n%s", strings.Join(v, "\n"))
	}
}

// The README's command, against a default `tokenline serve` (embedded NATS):
// go run ./examples/consumer -nats-url <url> -nkey <data-dir>/nats-reader.nk -durable billing
func TestReadmeCommandAgainstEmbeddedNATS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m := app.NewMain()
	m.Config.DataDir = t.TempDir()
	m.Config.NATSListen, m.Config.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	m.Config.LogLevel = "error"
	m.LogOutput = &porttest.LogBuffer{}
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c, err := m.Lifecycle.Create(ctx, "sandbox", []string{"users:read"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-nats-url", m.NATSURL(), "-nkey", filepath.Join(m.Config.DataDir, "nats-reader.nk"), "-durable", "billing"}

	if code := consume(ctx, []string{"-nats-url", m.NATSURL(), "-durable", "billing"}, io.Discard, io.Discard); code != 1 {
		t.Errorf("without credentials: exit code %d, want 1", code)
	}
	out, errOut := &porttest.LogBuffer{}, &porttest.LogBuffer{}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan int, 1)
	go func() { done <- consume(rctx, args, out, errOut) }()
	deadline := time.After(20 * time.Second)
	for !strings.Contains(out.String(), c.ID+" connection.created") {
		select {
		case code := <-done:
			t.Fatalf("consumer exited with %d: %s", code, errOut)
		case <-deadline:
			t.Fatalf("no event printed; stderr: %s", errOut)
		case <-time.After(20 * time.Millisecond):
		}
	}
	stop()
	if code := <-done; code != 0 {
		t.Errorf("exit code %d: %s", code, errOut)
	}
}
