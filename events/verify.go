package events

import (
	"cmp"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/tokenline/tokenline/domain"
)

// Verifier checks a stream's hash chains and signed checkpoints: give it
// every checkpoint message in order (Checkpoint), then every record of the
// event stream in order (Event), then call Finish. It folds each
// connection with domain.Connection.Apply, as tokenline's readers do, so
// an event it reports as breaking the chain is one tokenline refuses.
//
// The zero Verifier is not ready: use NewVerifier.
type Verifier struct {
	key  ed25519.PublicKey
	only string // one connection, or all

	conns map[string]*domain.Connection
	// seen lists every event folded, in order; seenAt indexes its first
	// indexed entries by the first 8 bytes of the hash (the last event
	// wins), built only when a break is explained: most streams have none.
	seen    seenList
	seenAt  map[uint64]int
	indexed int
	expect  map[headKey]expectation
	// expectSeq holds the sequences expect lists: most events are no head,
	// and a uint64 key is cheaper to look up than a headKey.
	expectSeq map[uint64]struct{}

	cpNumber uint64
	cpPrev   [32]byte
	cpUpTo   uint64
	cpKey    ed25519.PublicKey

	r VerifyReport
}

// seenList is an append-only list in blocks of seenBlock: appending
// never copies what is there.
type seenList struct {
	blocks [][]seen
	n      int
}

const seenBlock = 4096

func (l *seenList) add(s seen) {
	if l.n%seenBlock == 0 {
		l.blocks = append(l.blocks, make([]seen, 0, seenBlock))
	}
	b := &l.blocks[len(l.blocks)-1]
	*b = append(*b, s)
	l.n++
}

func (l *seenList) at(i int) seen { return l.blocks[i/seenBlock][i%seenBlock] }

type seen struct {
	hash     uint64 // short(the event's hash)
	seq      uint64
	accepted bool
}

type headKey struct {
	conn string
	seq  uint64
}

type expectation struct {
	head       [32]byte
	checkpoint uint64
	found      bool
}

// Break kinds.
const (
	BreakChain         = "chain"           // an event does not extend its connection's chain
	BreakUndecodable   = "undecodable"     // a message on a connection subject is not an event
	BreakCheckpoint    = "checkpoint"      // a checkpoint does not verify or does not follow the previous one
	BreakCheckpointSeq = "checkpoint-head" // an event a checkpoint lists is altered or missing
	BreakTailCut       = "tail-cut"        // the stream ends before the last checkpoint
)

// Break is one finding, in the order found.
type Break struct {
	Kind       string
	Seq        uint64 // stream sequence (0: none)
	Connection string
	Checkpoint uint64 // checkpoint number (0: none)
	Detail     string
}

func (b Break) String() string {
	s := b.Kind
	if b.Seq > 0 {
		s += fmt.Sprintf(" at seq %d", b.Seq)
	}
	if b.Connection != "" {
		s += " (connection " + b.Connection + ")"
	}
	if b.Checkpoint > 0 {
		s += fmt.Sprintf(" [checkpoint %d]", b.Checkpoint)
	}
	return s + ": " + b.Detail
}

// VerifyReport is what a verification found.
type VerifyReport struct {
	Events      int // event records read
	Connections int
	// BeforeChain counts events written before the chain (no prevhash),
	// accepted because their connection had no chained event yet.
	BeforeChain int
	// Refused counts events that extend the chain but that the transition
	// table refuses (tokenline skips them too).
	Refused     int
	Checkpoints int
	// LastCheckpoint is the last valid checkpoint (Number 0: none) and
	// the hash of its statement.
	LastCheckpoint     Checkpoint
	LastCheckpointHash string
	// KeyPinned is false when no public key was given: the signatures
	// were checked against the key the checkpoints name.
	KeyPinned bool
	Key       string
	// Breaks lists what is wrong, the first break first; MaxBreaks bounds
	// the list (Truncated counts the rest).
	Breaks    []Break
	Truncated int
}

// MaxBreaks bounds VerifyReport.Breaks.
const MaxBreaks = 100

// NewVerifier returns a verifier that checks signatures with key (nil: the
// key the checkpoints name) and events of connection only (empty: all).
func NewVerifier(key ed25519.PublicKey, only string) *Verifier {
	return &Verifier{
		key: key, only: only,
		conns:     map[string]*domain.Connection{},
		expect:    map[headKey]expectation{},
		expectSeq: map[uint64]struct{}{},
		r:         VerifyReport{KeyPinned: key != nil},
	}
}

func (v *Verifier) brk(b Break) {
	if len(v.r.Breaks) >= MaxBreaks {
		v.r.Truncated++
		return
	}
	v.r.Breaks = append(v.r.Breaks, b)
}

// Checkpoint takes the next checkpoint message of the checkpoint stream.
func (v *Verifier) Checkpoint(body []byte) {
	c, h, named, err := OpenCheckpoint(body, v.key)
	if err != nil {
		v.brk(Break{Kind: BreakCheckpoint, Checkpoint: c.Number, Detail: err.Error()})
		return
	}
	if v.key == nil {
		if v.cpKey != nil && !v.cpKey.Equal(named) {
			v.brk(Break{Kind: BreakCheckpoint, Checkpoint: c.Number, Detail: "signed with another key than the checkpoints before it: " + FormatKey(named)})
			return
		}
		v.cpKey = named
		v.r.Key = FormatKey(named)
	}
	prev, _ := ParseHash(c.Prev)
	switch {
	case c.Number != v.cpNumber+1:
		v.brk(Break{Kind: BreakCheckpoint, Checkpoint: c.Number, Detail: fmt.Sprintf("follows checkpoint %d: checkpoints in between were removed or this one is out of order", v.cpNumber)})
	case prev != v.cpPrev:
		v.brk(Break{Kind: BreakCheckpoint, Checkpoint: c.Number, Detail: "its prev is not the hash of the checkpoint before it: a checkpoint was altered or replaced"})
	}
	v.cpNumber, v.cpPrev, v.cpUpTo = c.Number, h, max(v.cpUpTo, c.UpTo)
	v.r.Checkpoints++
	v.r.LastCheckpoint, v.r.LastCheckpointHash = c, FormatHash(h)
	for _, hd := range c.Heads {
		if v.only != "" && hd.Connection != v.only {
			continue
		}
		head, _ := ParseHash(hd.Head)
		v.expect[headKey{hd.Connection, hd.Seq}] = expectation{head: head, checkpoint: c.Number}
		v.expectSeq[hd.Seq] = struct{}{}
	}
}

// Event takes the next record of the event stream.
func (v *Verifier) Event(rec *Record) {
	if rec.Err != nil {
		id := ""
		if len(rec.Subject) > len(SubjectPrefix) {
			id = rec.Subject[len(SubjectPrefix):]
		}
		if v.only != "" && id != v.only {
			return
		}
		v.r.Events++
		v.brk(Break{Kind: BreakUndecodable, Seq: rec.Seq, Connection: id, Detail: "not an event of this connection: " + rec.Err.Error()})
		v.check(id, rec.Seq, [32]byte{}, false)
		return
	}
	e := rec.Event
	if v.only != "" && e.ConnectionID != v.only {
		return
	}
	v.fold(e, v.conn(e.ConnectionID))
}

// LinkRecord is one message of the event stream as the link check reads
// it (Verifier.Link): its link (ParseLink), or, for a message ParseLink
// does not read, the record of its whole decode.
type LinkRecord struct {
	Seq uint64
	// Light reports that Info holds the message's link; otherwise Record
	// is the decoded message (Seq, Subject, Event or Err set).
	Light  bool
	Info   LinkInfo
	Record Record
}

// stubs are the payloads Link folds: Apply's decision depends on an
// event's type (and terminal flag), never on the other fields.
var stubs = map[domain.EventType]domain.Payload{
	domain.EventConnectionCreated: domain.ConnectionCreated{}, domain.EventAuthorisationStarted: domain.AuthorisationStarted{},
	domain.EventAuthorisationCompleted: domain.AuthorisationCompleted{}, domain.EventAuthorisationFailed: domain.AuthorisationFailed{},
	domain.EventRefreshStarted: domain.RefreshStarted{}, domain.EventRefreshSucceeded: domain.RefreshSucceeded{},
	domain.EventRefreshFailed: domain.RefreshFailed{}, domain.EventAccessRejected: domain.AccessRejected{},
	domain.EventTokensInvalidated: domain.TokensInvalidated{}, domain.EventConnectionUpdated: domain.ConnectionUpdated{},
	domain.EventConnectionDeleted: domain.ConnectionDeleted{}, domain.EventRefreshLeaseExtended: domain.RefreshLeaseExtended{},
}

// Link takes the next message of the event stream, as Event does, from its
// link: the connection is folded with domain.Connection.Apply on an event
// that carries the message's link, type and terminal flag and otherwise
// empty fields, which Apply accepts or refuses exactly as it would the
// decoded event (its decision reads nothing else), so the report is the one
// Event gives.
func (v *Verifier) Link(r *LinkRecord) {
	if !r.Light {
		v.Event(&r.Record)
		return
	}
	p, ok := stubs[r.Info.Type]
	if !ok {
		v.Event(&Record{Seq: r.Seq, Subject: SubjectPrefix + string(r.Info.Subject), Err: fmt.Errorf("%w: unknown event type %s", ErrMalformed, r.Info.Type)})
		return
	}
	if v.only != "" && string(r.Info.Subject) != v.only {
		return
	}
	switch d := p.(type) {
	case domain.RefreshFailed:
		d.Terminal = r.Info.Terminal
		p = d
	case domain.AccessRejected:
		d.Terminal = r.Info.Terminal
		p = d
	}
	c := v.conns[string(r.Info.Subject)]
	var id string
	if c != nil && c.ID != "" {
		id = c.ID // one copy of the id per connection
	} else {
		id = string(r.Info.Subject)
		if c == nil {
			c = &domain.Connection{}
			v.conns[id] = c
		}
	}
	v.fold(domain.Event{ConnectionID: id, Seq: r.Seq, Payload: p, Link: r.Info.Link}, c)
}

// conn returns the connection id's fold, a new one the first time.
func (v *Verifier) conn(id string) *domain.Connection {
	c := v.conns[id]
	if c == nil {
		c = &domain.Connection{}
		v.conns[id] = c
	}
	return c
}

// fold applies one decoded event (or its link) to its connection c
// (v.conns[e.ConnectionID]).
func (v *Verifier) fold(e domain.Event, c *domain.Connection) {
	v.r.Events++
	head := c.Head
	err := c.Apply(e)
	switch {
	case err == nil:
		if !e.Link.Chained {
			v.r.BeforeChain++
		}
	case errors.Is(err, domain.ErrChainBroken):
		v.brk(Break{Kind: BreakChain, Seq: e.Seq, Connection: e.ConnectionID, Detail: v.explain(e, head)})
	default:
		v.r.Refused++
	}
	v.seen.add(seen{hash: short(e.Link.Hash), seq: e.Seq, accepted: err == nil})
	v.check(e.ConnectionID, e.Seq, e.Link.Hash, err == nil)
}

// explain says how an event's link fails the head.
func (v *Verifier) explain(e domain.Event, head domain.ChainHead) string {
	what := fmt.Sprintf("%s does not extend the chain (head: seq %d)", e.Type(), head.Seq)
	if !e.Link.Chained {
		return what + ": it has no prevhash although the chain began: inserted"
	}
	if e.Link.Prev == ([32]byte{}) {
		return what + ": it claims to be the first event: inserted or reordered"
	}
	if v.seenAt == nil {
		v.seenAt = map[uint64]int{}
	}
	for ; v.indexed < v.seen.n; v.indexed++ {
		v.seenAt[v.seen.at(v.indexed).hash] = v.indexed
	}
	var s seen
	i, ok := v.seenAt[short(e.Link.Prev)] // used only to explain a break
	if ok {
		s = v.seen.at(i)
	}
	switch {
	case !ok:
		return what + ": its prevhash is the hash of no event in the stream: the event before it was altered or removed, or this one was forged"
	case s.accepted:
		return what + fmt.Sprintf(": it links to seq %d: the events after seq %d up to the head were inserted, or the events are out of order", s.seq, s.seq)
	default:
		return what + fmt.Sprintf(": it links to seq %d, which was refused: out of order, or following a forged event", s.seq)
	}
}

func short(h [32]byte) uint64 { return binary.LittleEndian.Uint64(h[:8]) }

// check compares an event with what the checkpoints listed for it.
func (v *Verifier) check(conn string, seq uint64, hash [32]byte, accepted bool) {
	if _, ok := v.expectSeq[seq]; !ok {
		return
	}
	k := headKey{conn, seq}
	x, ok := v.expect[k]
	if !ok {
		return
	}
	x.found = true
	v.expect[k] = x
	switch {
	case hash != x.head:
		v.brk(Break{Kind: BreakCheckpointSeq, Seq: seq, Connection: conn, Checkpoint: x.checkpoint,
			Detail: "the event stored here is not the one the checkpoint signed (head " + FormatHash(x.head) + "): altered or replaced"})
	case !accepted:
		v.brk(Break{Kind: BreakCheckpointSeq, Seq: seq, Connection: conn, Checkpoint: x.checkpoint,
			Detail: "the checkpoint signed this event as the chain head, but the chain no longer reaches it: an event before it was altered, removed or inserted"})
	}
}

// Finish completes the report: lastSeq is the event stream's last sequence
// (what the read reached).
func (v *Verifier) Finish(lastSeq uint64) VerifyReport {
	if v.cpUpTo > lastSeq && v.only == "" {
		v.brk(Break{Kind: BreakTailCut, Seq: lastSeq, Checkpoint: v.cpNumber,
			Detail: fmt.Sprintf("the stream ends at seq %d but checkpoint %d covers up to seq %d: its tail was cut", lastSeq, v.cpNumber, v.cpUpTo)})
	}
	var missing []Break
	for k, x := range v.expect {
		if !x.found {
			missing = append(missing, Break{Kind: BreakCheckpointSeq, Seq: k.seq, Connection: k.conn, Checkpoint: x.checkpoint,
				Detail: "the checkpoint lists this event as the chain head but the stream has no event of the connection here: removed, or the tail cut"})
		}
	}
	sortBreaks(missing)
	for _, b := range missing {
		v.brk(b)
	}
	v.r.Connections = len(v.conns)
	return v.r
}

func sortBreaks(bs []Break) {
	slices.SortFunc(bs, func(a, b Break) int {
		return cmp.Or(cmp.Compare(a.Seq, b.Seq), cmp.Compare(a.Connection, b.Connection))
	})
}
