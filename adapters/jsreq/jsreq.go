// Package jsreq holds what the JetStream adapters (jsstore, vault) share
// about requests to a NATS cluster: a per-try timeout with retries across a
// leader election (Do), and reads answered by a stream's leader rather than
// by any replica (LastMsg, NextMsg).
//
// Without Do, one request consumes its caller's whole deadline when the node
// it went to is gone, or when the stream has no leader for a moment. With it,
// each try gets TryTimeout (or what is left of the caller's deadline) and a
// timeout, "no responders", "no response from stream" or a leader-less error
// is tried again after a short backoff, until the caller's context ends.
//
// Direct gets (a stream's AllowDirect) may be answered by a follower that is
// behind the leader. LastMsg and NextMsg use $JS.API.STREAM.MSG.GET, which
// only the stream's leader answers, so what they return includes every
// acknowledged write.
package jsreq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TryTimeout bounds one try of a request (a leader election on a healthy
// cluster takes about 2 to 5 s, so several tries fit in a caller's deadline).
const TryTimeout = 2 * time.Second

// Backoff bounds: the first retry waits about minBackoff, each later one
// twice as long, up to maxBackoff.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = time.Second
)

// NoDeadlineBudget bounds all the tries of a request whose context has no
// deadline (an HTTP handler's, say): longer than a leader election after a
// node's crash (5 to 7 s measured), short enough that a caller learns soon
// that NATS is unreachable.
const NoDeadlineBudget = 10 * time.Second

// Do calls try with a context bounded by TryTimeout and by ctx, and calls it
// again after a backoff while it fails with a Retryable error and ctx has
// time left (NoDeadlineBudget if ctx has no deadline). It returns try's last error (or ctx's error if ctx ended first
// with no better one). try must be safe to repeat.
func Do(ctx context.Context, try func(ctx context.Context) error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, NoDeadlineBudget)
		defer cancel()
	}
	wait := minBackoff
	for {
		tctx, cancel := context.WithTimeout(ctx, TryTimeout)
		err := try(tctx)
		cancel()
		if err == nil || !Retryable(err) {
			return err
		}
		// Jitter spreads the retries of many callers over the election.
		d := wait/2 + rand.N(wait)
		if dl, _ := ctx.Deadline(); time.Until(dl) < d {
			return err
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, maxBackoff)
	}
}

// Retryable reports whether err is worth another try on a cluster: a
// request that timed out or found no responder, a stream that did not
// answer, a stream or cluster without a leader at the moment, or an
// expected-sequence check the leader could not make yet.
func Retryable(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrNoStreamResponse), errors.Is(err, errNotLeader):
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return retryableCode(int(apiErr.ErrorCode))
	}
	return false
}

func retryableCode(code int) bool {
	switch code {
	case 10008, // JetStream system temporarily unavailable
		10009, // JetStream cluster can not handle request (not the leader)
		10118, // stream is offline
		10163, // expected last sequence per subject temporarily unavailable
		// "wrong last sequence" without a sequence: a replicated stream's
		// leader cannot check an expected last subject sequence while an
		// earlier message on the subject is in flight, even one already
		// acknowledged. Another try checks it (10071 if it is wrong).
		10164:
		return true
	}
	return false
}

var errNotLeader = errors.New("jsreq: stream has no leader")

// Msg is a stream message as the leader returned it.
type Msg struct {
	Subject  string
	Sequence uint64
	Header   nats.Header
	Data     []byte
	Time     time.Time
}

// LastMsg returns the last message on subject of stream, as the stream's
// leader has it, or an error wrapping jetstream.ErrMsgNotFound if there is
// none. It retries as Do does.
func LastMsg(ctx context.Context, js jetstream.JetStream, stream, subject string) (*Msg, error) {
	return get(ctx, js, stream, msgGetRequest{LastFor: subject})
}

// Latest is LastMsg for a stream with replicas copies: a stream with one
// copy has no follower to be behind, and is read by a direct get (about
// half the cost of a request to the leader on one server); a replicated
// one is read from its leader. The stream must allow direct gets.
func Latest(ctx context.Context, js jetstream.JetStream, stream string, replicas int, subject string) (*Msg, error) {
	if replicas > 1 {
		return LastMsg(ctx, js, stream, subject)
	}
	subj := DirectGetSubject(js, stream, subject)
	nc := js.Conn()
	var out *Msg
	err := Do(ctx, func(ctx context.Context) error {
		resp, err := nc.RequestWithContext(ctx, subj, nil)
		if err != nil {
			return err
		}
		out, err = ParseDirectGet(stream, resp)
		return err
	})
	return out, err
}

// DirectGetSubject is the subject of a direct get of the last message on
// subject of stream (the request Latest sends for a stream of one
// replica), for a caller that sends it itself.
func DirectGetSubject(js jetstream.JetStream, stream, subject string) string {
	return apiPrefix(js) + "DIRECT.GET." + stream + "." + subject
}

// ParseDirectGet reads the answer to a direct get as Latest does: the
// message, an error wrapping jetstream.ErrMsgNotFound (404), or an error
// for any other status.
func ParseDirectGet(stream string, resp *nats.Msg) (*Msg, error) {
	if status := resp.Header.Get("Status"); status != "" {
		if status == "404" {
			return nil, jetstream.ErrMsgNotFound
		}
		return nil, fmt.Errorf("jsreq: direct get on %s: status %s %s", stream, status, resp.Header.Get("Description"))
	}
	seq, err := strconv.ParseUint(resp.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("jsreq: direct get on %s: bad sequence %q", stream, resp.Header.Get(jetstream.SequenceHeader))
	}
	t, _ := time.Parse(time.RFC3339Nano, resp.Header.Get(jetstream.TimeStampHeaer))
	return &Msg{Subject: resp.Header.Get(jetstream.SubjectHeader), Sequence: seq, Header: resp.Header, Data: resp.Data, Time: t}, nil
}

// NextMsg returns the first message on subject of stream with a sequence
// at or after seq, as the stream's leader has it, or an error wrapping
// jetstream.ErrMsgNotFound if there is none. It retries as Do does.
func NextMsg(ctx context.Context, js jetstream.JetStream, stream, subject string, seq uint64) (*Msg, error) {
	return get(ctx, js, stream, msgGetRequest{Seq: seq, NextFor: subject})
}

type msgGetRequest struct {
	Seq     uint64 `json:"seq,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
}

type msgGetResponse struct {
	Error *struct {
		Code        int    `json:"code"`
		ErrorCode   int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error,omitempty"`
	Message *struct {
		Subject  string    `json:"subject"`
		Sequence uint64    `json:"seq"`
		Header   []byte    `json:"hdrs,omitempty"`
		Data     []byte    `json:"data,omitempty"`
		Time     time.Time `json:"time"`
	} `json:"message,omitempty"`
}

func get(ctx context.Context, js jetstream.JetStream, stream string, req msgGetRequest) (*Msg, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	subj := apiPrefix(js) + "STREAM.MSG.GET." + stream
	nc := js.Conn()
	var out *Msg
	err = Do(ctx, func(ctx context.Context) error {
		resp, err := nc.RequestWithContext(ctx, subj, body)
		if err != nil {
			return err
		}
		var r msgGetResponse
		if err := json.Unmarshal(resp.Data, &r); err != nil {
			return fmt.Errorf("jsreq: message get on %s: %w", stream, err)
		}
		if r.Error != nil {
			if r.Error.ErrorCode == int(jetstream.JSErrCodeMessageNotFound) {
				return jetstream.ErrMsgNotFound
			}
			if retryableCode(r.Error.ErrorCode) {
				return fmt.Errorf("%w: %s (%d)", errNotLeader, r.Error.Description, r.Error.ErrorCode)
			}
			return fmt.Errorf("jsreq: message get on %s: %s (%d)", stream, r.Error.Description, r.Error.ErrorCode)
		}
		if r.Message == nil {
			return fmt.Errorf("jsreq: message get on %s: %w", stream, jetstream.ErrInvalidJetStreamResponse)
		}
		m := &Msg{Subject: r.Message.Subject, Sequence: r.Message.Sequence, Data: r.Message.Data, Time: r.Message.Time}
		if len(r.Message.Header) > 0 {
			if m.Header, err = nats.DecodeHeadersMsg(r.Message.Header); err != nil {
				return fmt.Errorf("jsreq: message get on %s: headers: %w", stream, err)
			}
		}
		out = m
		return nil
	})
	return out, err
}

// DefaultAPI reports whether js uses the default JetStream API prefix
// ($JS.API.: no domain, no other prefix).
func DefaultAPI(js jetstream.JetStream) bool { return apiPrefix(js) == jetstream.DefaultAPIPrefix }

// apiPrefix is the JetStream API prefix js uses ("$JS.API." by default).
func apiPrefix(js jetstream.JetStream) string {
	o := js.Options()
	switch {
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	case o.APIPrefix != "":
		p := o.APIPrefix
		if p[len(p)-1] != '.' {
			p += "."
		}
		return p
	}
	return jetstream.DefaultAPIPrefix
}
