package app

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/natsserver"
	"github.com/tokenline/tokenline/adapters/webhook"
)

// The reader identity cannot see webhook subscriptions, their dead
// letters, the delivery log or the sealed secrets; the subscription's
// events carry the secret's fingerprint, never the secret.
func TestWebhookSecretsAreOutOfTheReadersReach(t *testing.T) {
	m := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w, secret, err := m.Webhooks.Create(ctx, webhook.CreateRequest{URL: "https://hooks.example.com/x"})
	if err != nil {
		t.Fatal(err)
	}

	// tokenline's identity reads the subscription's events: no secret.
	ajs := m.Store.JetStream()
	st, err := ajs.Stream(ctx, webhook.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := st.GetLastMsgForSubject(ctx, webhook.SubjectPrefix+w.ID)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := webhook.SecretKey(secret)
	raw := string(msg.Data)
	if strings.Contains(raw, secret) || strings.Contains(raw, strings.TrimPrefix(secret, webhook.SecretPrefix)) || len(key) == 0 || !strings.Contains(raw, webhook.Fingerprint(secret)) {
		t.Fatalf("the created event carries the secret or lacks its fingerprint: %s", raw)
	}
	kv, err := ajs.KeyValue(ctx, webhook.DefaultSecretsBucket)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := kv.Get(ctx, w.ID)
	if err != nil || strings.Contains(string(sealed.Value()), strings.TrimPrefix(secret, webhook.SecretPrefix)) {
		t.Fatalf("the secrets bucket holds the secret in clear (or nothing): %v", err)
	}

	refused := make(violations, 64)
	reader, err := natsserver.Connect(ctx, m.NATSURL(), natsserver.ConnectOptions{CredsFile: m.NATSReaderFile()})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	reader.SetErrorHandler(refused.handler)
	inbox := reader.NewRespInbox()
	for _, subject := range []string{
		"$JS.API.STREAM.INFO." + webhook.DefaultStream,
		"$JS.API.DIRECT.GET." + webhook.DefaultStream + "." + webhook.SubjectPrefix + w.ID,
		"$JS.API.STREAM.MSG.GET." + webhook.DefaultStream,
		"$JS.API.CONSUMER.CREATE." + webhook.DefaultStream,
		"$JS.API.STREAM.INFO." + webhook.DefaultLogStream,
		"$JS.API.CONSUMER.CREATE." + webhook.DefaultLogStream,
		"$JS.API.DIRECT.GET.KV_" + webhook.DefaultSecretsBucket + ".$KV." + webhook.DefaultSecretsBucket + "." + w.ID,
		"$JS.API.STREAM.MSG.GET.KV_" + webhook.DefaultSecretsBucket,
		"$KV." + webhook.DefaultSecretsBucket + "." + w.ID,
		webhook.SubjectPrefix + w.ID,
	} {
		if err := reader.PublishRequest(subject, inbox, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		if err := reader.Flush(); err != nil {
			t.Fatal(err)
		}
		refused.await(t, "Publish", subject)
	}
	for _, subject := range []string{webhook.SubjectPrefix + ">", webhook.LogSubjectPrefix + ">"} {
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
	rjs, err := jetstream.New(reader)
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
	defer scancel()
	if _, err := rjs.KeyValue(sctx, webhook.DefaultSecretsBucket); err == nil {
		t.Fatal("the reader opened the secrets bucket")
	}
}
