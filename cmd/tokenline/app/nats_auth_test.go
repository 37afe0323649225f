package app

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/natsserver"
	"github.com/tokenline/tokenline/adapters/porttest"
	"github.com/tokenline/tokenline/adapters/vault"
	"github.com/tokenline/tokenline/events"
)

// violations collects the server's permission errors of one connection.
type violations chan string

func (v violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrPermissionViolation) {
		select {
		case v <- err.Error():
		default:
		}
	}
}

// await waits (at most 10 s) for the server to refuse op on subject.
func (v violations) await(t *testing.T, op, subject string) {
	t.Helper()
	want := `Permissions Violation for ` + op + ` to "` + subject + `"`
	deadline := time.After(10 * time.Second)
	for {
		select {
		case got := <-v:
			if strings.Contains(got, want) {
				return
			}
		case <-deadline:
			t.Fatalf("the server did not refuse: %s", want)
		}
	}
}

// The embedded NATS of a real tokenline: anonymous clients are refused;
// the reader identity consumes the stream and every write or
// administrative request it makes is refused, leaving everything as it was;
// tokenline's own identity has every right.
func TestEmbeddedNATSReaderIsReadOnly(t *testing.T) {
	m := startServer(t)
	c := newCLI(t, m, m.BaseURL)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// An active connection: events in the stream, tokens in the vault.
	id := c.createConnection()
	authURL := strings.TrimSpace(c.ok("connections", "authorize", id))
	resp, err := http.Get(authURL) // the sandbox approves and redirects to the callback
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitFor(t, "the connection to be active", func() bool {
		return strings.Contains(lineWith(c.ok("connections", "get", id), "State:"), "active")
	})

	if nc, err := nats.Connect(m.NATSURL()); err == nil {
		nc.Close()
		t.Fatal("an anonymous client connected to the embedded NATS")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("anonymous: %v, want an authorization violation", err)
	}

	// tokenline's own identity over TCP: every right (the administrator's).
	admin, err := natsserver.Connect(ctx, m.NATSURL(), natsserver.ConnectOptions{CredsFile: m.NATSCredsFile(), InboxPrefix: natsserver.InboxPrefix})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ajs, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := ajs.KeyValue(ctx, vault.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	tokenEntry, err := tokens.Get(ctx, id)
	if err != nil {
		t.Fatalf("tokenline's identity cannot read its vault: %v", err)
	}
	other, err := ajs.CreateOrUpdateConsumer(ctx, jsstore.DefaultStream, jetstream.ConsumerConfig{Durable: "other-team", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := ajs.Stream(ctx, jsstore.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	before := stream.CachedInfo()

	// The reader.
	refused := make(violations, 64)
	reader, err := natsserver.Connect(ctx, m.NATSURL(), natsserver.ConnectOptions{CredsFile: m.NATSReaderFile()})
	if err != nil {
		t.Fatalf("reader: %v", err)
	}
	defer reader.Close()
	reader.SetErrorHandler(refused.handler)
	rjs, err := jetstream.New(reader)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("reader consumes", func(t *testing.T) {
		live, err := reader.SubscribeSync(events.SubjectAll)
		if err != nil {
			t.Fatal(err)
		}
		defer live.Unsubscribe()
		if err := reader.Flush(); err != nil {
			t.Fatal(err)
		}
		cons, err := rjs.CreateOrUpdateConsumer(ctx, jsstore.DefaultStream, jetstream.ConsumerConfig{
			Durable: "reader-test", FilterSubject: events.Subject(id), AckPolicy: jetstream.AckExplicitPolicy,
		})
		if err != nil {
			t.Fatalf("reader cannot create a durable consumer: %v", err)
		}
		batch, err := cons.Fetch(10, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var types []string
		for msg := range batch.Messages() {
			e, err := events.Decode(msg.Data())
			if err != nil {
				t.Fatal(err)
			}
			types = append(types, string(e.Type()))
			if err := msg.DoubleAck(ctx); err != nil {
				t.Fatalf("reader cannot ack: %v", err)
			}
		}
		if len(types) < 3 || types[0] != "connection.created" {
			t.Errorf("reader's consumer got %v", types)
		}
		if ci, err := cons.Info(ctx); err != nil || ci.NumAckPending != 0 || ci.AckFloor.Stream == 0 {
			t.Errorf("consumer info %+v, %v", ci, err)
		}
		if _, err := stream.GetMsg(ctx, 1); err != nil { // admin handle; the reader's direct get below
			t.Fatal(err)
		}
		rs, err := rjs.Stream(ctx, jsstore.DefaultStream)
		if err != nil {
			t.Fatalf("reader cannot read the stream info: %v", err)
		}
		if _, err := rs.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(events.SubjectAll)); err != nil {
			t.Fatalf("reader cannot get a stored event: %v", err)
		}
		// Core NATS: the next event arrives live.
		newID := c.createConnection()
		msg, err := live.NextMsg(10 * time.Second)
		if err != nil || msg.Subject != events.Subject(newID) {
			t.Fatalf("live event: %v, %v", msg, err)
		}
	})

	t.Run("reader writes are refused", func(t *testing.T) {
		inbox := reader.NewRespInbox()
		pub := func(subject, body string) {
			t.Helper()
			if err := reader.PublishRequest(subject, inbox, []byte(body)); err != nil {
				t.Fatal(err)
			}
			if err := reader.Flush(); err != nil {
				t.Fatal(err)
			}
			refused.await(t, "Publish", subject)
		}
		forged := `{"specversion":"1.0","id":"forged","source":"evil","type":"tokenline.connection.deleted","subject":"` + id + `","data":{}}`
		pub(events.Subject(id), forged)
		pub("$JS.API.STREAM.UPDATE."+jsstore.DefaultStream, `{"name":"TOKENLINE","subjects":["tokenline.conn.>"],"max_age":2000000000}`)
		pub("$JS.API.STREAM.DELETE."+jsstore.DefaultStream, "")
		pub("$JS.API.STREAM.PURGE."+jsstore.DefaultStream, "")
		pub("$JS.API.STREAM.MSG.DELETE."+jsstore.DefaultStream, `{"seq":1}`)
		pub("$JS.API.STREAM.CREATE.EVIL", `{"name":"EVIL","subjects":["$KV.>"]}`)
		for _, s := range []string{"KV_" + vault.DefaultBucket, "KV_" + vault.DefaultAttemptsBucket, "KV_" + jsstore.PositionsBucket, "OBJ_" + jsstore.SnapshotsBucket} {
			pub("$JS.API.STREAM.DELETE."+s, "")
			pub("$JS.API.STREAM.INFO."+s, "")
		}
		// KV get (direct and stored), put and delete on the vault bucket.
		pub("$JS.API.DIRECT.GET.KV_"+vault.DefaultBucket+".$KV."+vault.DefaultBucket+"."+id, "")
		pub("$JS.API.STREAM.MSG.GET.KV_"+vault.DefaultBucket, `{"last_by_subj":"$KV.`+vault.DefaultBucket+`.`+id+`"}`)
		pub("$JS.API.DIRECT.GET.KV_"+vault.DefaultAttemptsBucket, `{"last_by_subj":"$KV.`+vault.DefaultAttemptsBucket+`.x"}`)
		pub("$KV."+vault.DefaultBucket+"."+id, "garbage")
		pub("$O."+jsstore.SnapshotsBucket+".M.x", "garbage")
		// Another's consumer: neither deleted nor listed.
		pub("$JS.API.CONSUMER.DELETE."+jsstore.DefaultStream+".other-team", "")
		pub("$JS.API.CONSUMER.LIST."+jsstore.DefaultStream, "")
		pub("$JS.API.CONSUMER.NAMES."+jsstore.DefaultStream, "")
		// The high-level API fails the same way.
		uctx, ucancel := context.WithTimeout(ctx, 3*time.Second)
		cfg := before.Config
		cfg.MaxAge = 2 * time.Second
		_, err := rjs.UpdateStream(uctx, cfg)
		ucancel()
		if err == nil {
			t.Fatal("reader updated the stream")
		}
		refused.await(t, "Publish", "$JS.API.STREAM.UPDATE."+jsstore.DefaultStream)

		for _, subject := range []string{"$KV." + vault.DefaultBucket + ".>", natsserver.InboxPrefix + ".>", ">", "$JS.EVENT.>"} {
			sub, err := reader.SubscribeSync(subject)
			if err != nil {
				t.Fatal(err)
			}
			if err := reader.Flush(); err != nil {
				t.Fatal(err)
			}
			refused.await(t, "Subscription", subject)
			_ = sub.Unsubscribe()
		}

		// A push consumer aimed at the vault delivers nothing there: the
		// server delivers only where a client subscribed, and readers may
		// subscribe only to the event subjects (a cycle, refused) and _INBOX.
		if _, err := rjs.CreateOrUpdateConsumer(ctx, jsstore.DefaultStream, jetstream.ConsumerConfig{Durable: "push-into-stream", DeliverSubject: events.Subject(id)}); err == nil {
			t.Error("a push consumer delivering into the stream's own subjects was created")
		}
	})

	// Everything is as it was, and tokenline still works.
	after, err := stream.Info(ctx)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	if after.Config.MaxAge != before.Config.MaxAge {
		t.Errorf("MaxAge changed from %s to %s", before.Config.MaxAge, after.Config.MaxAge)
	}
	got, err := tokens.Get(ctx, id)
	if err != nil || got.Revision() != tokenEntry.Revision() || string(got.Value()) != string(tokenEntry.Value()) {
		t.Errorf("vault entry changed: %v", err)
	}
	if _, err := other.Info(ctx); err != nil {
		t.Errorf("the other consumer: %v", err)
	}
	last, err := stream.GetLastMsgForSubject(ctx, events.Subject(id))
	if err != nil {
		t.Fatal(err)
	}
	if e, err := events.Decode(last.Data); err != nil || e.Actor == "evil" || strings.Contains(string(last.Data), "forged") {
		t.Errorf("last event of %s: %s", id, last.Data)
	}
	if out := c.ok("connections", "get", id); !strings.Contains(lineWith(out, "State:"), "active") {
		t.Errorf("after the reader's attempts: %s", out)
	}
}

// serve says how a consumer connects (the URL and the reader's seed file)
// and never prints a seed.
func TestServePrintsHowConsumersConnect(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &porttest.LogBuffer{}
	cmd := NewRootCommand(ctx, out, io.Discard)
	cmd.SetArgs([]string{"serve", "--data-dir", dir, "--http", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--log-level", "error"})
	done := make(chan error, 1)
	go func() { done <- cmd.Execute() }()
	waitFor(t, "serve to print its addresses", func() bool { return strings.Contains(out.String(), "Data dir:") })
	text := out.String()
	reader := filepath.Join(dir, natsserver.ReaderSeedFile)
	if l := lineWith(text, "tokenline events tail --nats-url nats://127.0.0.1:", "--creds "+reader); l == "" {
		t.Errorf("serve does not say how to tail as the reader:\n%s", text)
	}
	if lineWith(text, "Consumers:", reader) == "" || lineWith(text, "Admin:", filepath.Join(dir, natsserver.TokenlineSeedFile)) == "" {
		t.Errorf("serve does not name the seed files:\n%s", text)
	}
	for _, name := range []string{natsserver.ReaderSeedFile, natsserver.TokenlineSeedFile} {
		seed, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if s := strings.TrimSpace(string(seed)); !strings.HasPrefix(s, "SU") || strings.Contains(text, s) || strings.Contains(text, s[:12]) {
			t.Errorf("serve printed the seed of %s", name)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop")
	}
}
