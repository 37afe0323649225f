// Package tamper rewrites a JetStream stream the way an attacker with
// administrative access to NATS could: the stream denies deleting messages,
// so altering or removing one means copying the stream, changing the copy
// and putting it in the original's place. Tests use it to check that
// tokenline's hash chains and signed checkpoints detect each kind of
// change; it has no other use.
package tamper

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Msg is one stored message.
type Msg struct {
	Subject string
	Data    []byte
	Header  nats.Header
}

// maxMsgs bounds what Rewrite copies (tests write a few hundred).
const maxMsgs = 100000

// Rewrite reads every message of stream, lets edit change the list, then
// deletes the stream and creates it again with the same configuration and
// the edited messages, in order (sequences are renumbered from 1).
func Rewrite(ctx context.Context, js jetstream.JetStream, stream string, edit func([]Msg) []Msg) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	if info.State.Msgs > maxMsgs {
		return fmt.Errorf("tamper: %d messages, more than %d", info.State.Msgs, maxMsgs)
	}
	var msgs []Msg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		h := nats.Header{}
		if id := m.Header.Get(jetstream.MsgIDHeader); id != "" {
			h.Set(jetstream.MsgIDHeader, id)
		}
		msgs = append(msgs, Msg{Subject: m.Subject, Data: m.Data, Header: h})
	}
	msgs = edit(msgs)
	cfg := info.Config
	if err := js.DeleteStream(ctx, stream); err != nil {
		return err
	}
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		return err
	}
	for _, m := range msgs {
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: m.Subject, Data: m.Data, Header: m.Header}); err != nil {
			return err
		}
	}
	return nil
}
