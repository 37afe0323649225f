package jsstore

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/jsreq"
)

// Bucket names of the projections' durable state.
const (
	// PositionsBucket is the KV bucket holding, under a projection's name,
	// the last stream sequence the projection applied (authenticated), and
	// under "snapshot.<name>" which object holds its latest snapshot.
	PositionsBucket = "tokenline_positions"
	// SnapshotsBucket is the object store holding the projections'
	// snapshots, one object per snapshot written ("<name>.<random>").
	SnapshotsBucket = "tokenline_snapshots"
)

// MaxSnapshotBytes bounds the size of a snapshot object OpenSnapshot
// accepts; a larger one is refused before it is read.
const MaxSnapshotBytes = 4 << 30

// macSize is the size of the HMAC-SHA-256 that ends every snapshot object.
const macSize = sha256.Size

// orphanAge is how old an object of a projection must be, when the
// pointer does not name it, for PutSnapshot to delete it as the leftover of
// a writer that stopped between writing it and publishing it.
const orphanAge = 10 * time.Minute

// ErrUntrusted means a position or snapshot failed its authentication (its
// MAC does not match: written with another key, altered, or not written by
// tokenline), or is malformed. The caller rebuilds from the stream.
var ErrUntrusted = errors.New("jsstore: checkpoint not authentic")

// Checkpoints keeps the projections' durable state on JetStream
// (implements projections.Checkpoints): each projection's position in the
// KV bucket PositionsBucket, and its latest snapshot in the object store
// SnapshotsBucket. Both are authenticated with HMAC-SHA-256 under the key
// given to CheckpointsWithKey, and checked before use: a value that fails
// is ErrUntrusted. It is safe for concurrent use, also by several
// instances sharing the buckets.
//
// Every snapshot is written as a new object; a compare-and-set on the
// pointer key "snapshot.<name>" in the positions bucket then publishes it,
// unless the pointer names a snapshot at a later position, and whoever
// replaces an object deletes it (chunks and meta), so storage stays at one
// object per projection however many instances write. An object left by a
// writer that stopped between the two steps is deleted by a later
// PutSnapshot once it is orphanAge old.
type Checkpoints struct {
	js       jetstream.JetStream
	kv       jetstream.KeyValue
	obs      jetstream.ObjectStore
	replicas int
	key      []byte
}

// processKey authenticates the checkpoints of stores given no key: valid
// only within this process, so that another process never trusts them.
var processKey = func() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}()

// Checkpoints is CheckpointsWithKey with a random key of this process (a
// later process does not trust what it writes, and rebuilds).
func (s *Store) Checkpoints(ctx context.Context) (*Checkpoints, error) {
	return s.CheckpointsWithKey(ctx, processKey)
}

// CheckpointsWithKey opens (creating them if needed, raising their
// replicas to the store's) the positions KV bucket and the snapshots object
// store; key (at least 16 bytes) authenticates what they hold.
func (s *Store) CheckpointsWithKey(ctx context.Context, key []byte) (*Checkpoints, error) {
	if len(key) < 16 {
		return nil, fmt.Errorf("jsstore: checkpoints: key is %d bytes, want at least 16", len(key))
	}
	var kv jetstream.KeyValue
	err := jsreq.Do(ctx, func(ctx context.Context) (err error) {
		kv, err = s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: PositionsBucket, Description: "tokenline projection positions and snapshot pointers",
			History: 1, Storage: jetstream.FileStorage, Replicas: s.cfg.Replicas,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("jsstore: positions bucket: %w", err)
	}
	var obs jetstream.ObjectStore
	err = jsreq.Do(ctx, func(ctx context.Context) (err error) {
		obs, err = s.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket: SnapshotsBucket, Description: "tokenline projection snapshots",
			Storage: jetstream.FileStorage, Replicas: s.cfg.Replicas,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("jsstore: snapshots bucket: %w", err)
	}
	return &Checkpoints{js: s.js, kv: kv, obs: obs, replicas: s.cfg.Replicas, key: bytes.Clone(key)}, nil
}

func (c *Checkpoints) mac(kind, name string) hash.Hash {
	h := hmac.New(sha256.New, c.key)
	h.Write([]byte("tokenline " + kind + "\x00" + name + "\x00"))
	return h
}

func (c *Checkpoints) positionMAC(name string, pos uint64) string {
	h := c.mac("position", name)
	h.Write([]byte(strconv.FormatUint(pos, 10)))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// Position returns the position recorded for a projection (0: none), or an
// error wrapping ErrUntrusted if the stored value is malformed or fails
// its MAC.
func (c *Checkpoints) Position(ctx context.Context, name string) (uint64, error) {
	m, err := c.latest(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("jsstore: read position: %w", err)
	}
	if len(m.Data) > 128 {
		return 0, fmt.Errorf("%w: position of %s: %d bytes", ErrUntrusted, name, len(m.Data))
	}
	num, sum, ok := strings.Cut(string(m.Data), ".")
	n, err := strconv.ParseUint(num, 10, 64)
	if !ok || err != nil || !hmac.Equal([]byte(sum), []byte(c.positionMAC(name, n))) {
		return 0, fmt.Errorf("%w: position of %s", ErrUntrusted, name)
	}
	return n, nil
}

// SetPosition records a projection's position.
func (c *Checkpoints) SetPosition(ctx context.Context, name string, pos uint64) error {
	v := []byte(strconv.FormatUint(pos, 10) + "." + c.positionMAC(name, pos))
	if err := jsreq.Do(ctx, func(ctx context.Context) error {
		_, err := c.kv.Put(ctx, name, v)
		return err
	}); err != nil {
		return fmt.Errorf("jsstore: write position: %w", err)
	}
	return nil
}

// latest reads a key of the positions bucket from its stream leader
// (jsreq.Latest): an error wrapping jetstream.ErrKeyNotFound if it has no
// value.
func (c *Checkpoints) latest(ctx context.Context, key string) (*jsreq.Msg, error) {
	m, err := jsreq.Latest(ctx, c.js, "KV_"+PositionsBucket, c.replicas, "$KV."+PositionsBucket+"."+key)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, jetstream.ErrKeyNotFound
	}
	if err != nil {
		return nil, err
	}
	if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
		return nil, jetstream.ErrKeyNotFound
	}
	return m, nil
}

// pointer is the value of "snapshot.<name>": the object holding the latest
// snapshot and the position it was taken at.
type pointer struct {
	object string
	pos    uint64
	rev    uint64 // the KV revision it was read at (0: none)
}

func pointerKey(name string) string { return "snapshot." + name }

func (c *Checkpoints) pointer(ctx context.Context, name string) (pointer, error) {
	m, err := c.latest(ctx, pointerKey(name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return pointer{}, nil
	}
	if err != nil {
		return pointer{}, fmt.Errorf("jsstore: read snapshot pointer: %w", err)
	}
	obj, pos, ok := strings.Cut(string(m.Data), " ")
	n, err := strconv.ParseUint(pos, 10, 64)
	if !ok || err != nil || !objectOf(name, obj) {
		// Not written by PutSnapshot: as good as none (the next write
		// replaces it).
		return pointer{rev: m.Sequence}, nil
	}
	return pointer{object: obj, pos: n, rev: m.Sequence}, nil
}

// OpenSnapshot opens a projection's latest snapshot; it returns nil and no
// error when there is none. The reader yields the snapshot without its
// MAC; reaching EOF checks the MAC and the object's digest (an error at the
// end, wrapping ErrUntrusted for a MAC mismatch, means the snapshot must
// not be used). An object larger than MaxSnapshotBytes is refused before it
// is read. The caller closes it.
func (c *Checkpoints) OpenSnapshot(ctx context.Context, name string) (io.ReadCloser, error) {
	p, err := c.pointer(ctx, name)
	if err != nil || p.object == "" {
		return nil, err
	}
	var res jetstream.ObjectResult
	// The object's meta is read by direct get, which on a replicated
	// bucket a follower that has not stored the object yet may answer: try
	// again a few times. (Not within jsreq.Do: the result reads its chunks
	// with Get's context.)
	for try := 0; ; try++ {
		res, err = c.obs.Get(ctx, p.object)
		retry := jsreq.Retryable(err) || c.replicas > 1 && errors.Is(err, jetstream.ErrObjectNotFound)
		if !retry || try == 4 || ctx.Err() != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("jsstore: read snapshot: the pointer names %s, which is gone", p.object)
	}
	if err != nil {
		return nil, fmt.Errorf("jsstore: read snapshot: %w", err)
	}
	info, err := res.Info()
	if err != nil {
		res.Close()
		return nil, fmt.Errorf("jsstore: read snapshot: %w", err)
	}
	if info.Size > MaxSnapshotBytes || info.Size < macSize {
		res.Close()
		return nil, fmt.Errorf("%w: snapshot %s is %d bytes (at most %d)", ErrUntrusted, p.object, info.Size, uint64(MaxSnapshotBytes))
	}
	return &macReader{r: res, c: res, h: c.mac("snapshot", name), name: p.object}, nil
}

// macReader yields all but the last macSize bytes of r, hashing them, and
// at EOF compares the last macSize bytes with the hash.
type macReader struct {
	r    io.Reader
	c    io.Closer
	h    hash.Hash
	name string
	tail []byte // held back: may be the MAC
	buf  []byte
	err  error
}

func (m *macReader) Read(p []byte) (int, error) {
	for {
		if m.err != nil {
			return 0, m.err
		}
		if len(m.tail) > macSize {
			n := copy(p, m.tail[:len(m.tail)-macSize])
			m.h.Write(m.tail[:n])
			m.tail = m.tail[n:]
			return n, nil
		}
		if cap(m.buf) == 0 {
			m.buf = make([]byte, 64<<10)
		}
		n, err := m.r.Read(m.buf[:cap(m.buf)])
		m.tail = append(m.tail, m.buf[:n]...)
		if err == io.EOF {
			if len(m.tail) != macSize || !hmac.Equal(m.tail, m.h.Sum(nil)) {
				m.err = fmt.Errorf("%w: snapshot %s: MAC mismatch", ErrUntrusted, m.name)
			} else {
				m.err = io.EOF
			}
			continue
		}
		if err != nil {
			m.err = err
		}
	}
}

func (m *macReader) Close() error { return m.c.Close() }

// PutSnapshot stores what r yields up to EOF, followed by its MAC, as a new
// object, and publishes it as the projection's latest snapshot unless the
// current one is at a later position (meta["position"]); the replaced (or
// unpublished) object is deleted.
func (c *Checkpoints) PutSnapshot(ctx context.Context, name string, meta map[string]string, r io.Reader) error {
	pos, err := strconv.ParseUint(meta["position"], 10, 64)
	if err != nil {
		return fmt.Errorf("jsstore: write snapshot: metadata position %q: %w", meta["position"], err)
	}
	obj := name + "." + strings.ToLower(rand.Text())
	h := c.mac("snapshot", name)
	// The MAC follows the content: lazyReader computes it once the tee has
	// read r to EOF.
	body := io.MultiReader(io.TeeReader(r, h), &lazyReader{f: func() []byte { return h.Sum(nil) }})
	if _, err := c.obs.Put(ctx, jetstream.ObjectMeta{Name: obj, Description: "tokenline projection snapshot", Metadata: meta}, body); err != nil {
		c.deleteObject(ctx, obj)
		return fmt.Errorf("jsstore: write snapshot: %w", err)
	}
	replaced, err := c.publish(ctx, name, obj, pos)
	if err != nil {
		c.deleteObject(ctx, obj)
		return err
	}
	if replaced != "" {
		c.deleteObject(ctx, replaced)
	}
	c.sweep(ctx, name, obj)
	return nil
}

// publish points "snapshot.<name>" at obj (compare-and-set on the key's
// revision, again if another writer got there first) and returns the
// object it replaced; if the pointer names a snapshot at a later
// position, it returns obj itself (to be deleted) and leaves the pointer.
func (c *Checkpoints) publish(ctx context.Context, name, obj string, pos uint64) (replaced string, err error) {
	val := []byte(obj + " " + strconv.FormatUint(pos, 10))
	for range 20 {
		cur, err := c.pointer(ctx, name)
		if err != nil {
			return "", err
		}
		if cur.object != "" && cur.pos > pos {
			return obj, nil
		}
		err = jsreq.Do(ctx, func(ctx context.Context) error {
			var err error
			if cur.rev == 0 {
				_, err = c.kv.Create(ctx, pointerKey(name), val)
			} else {
				_, err = c.kv.Update(ctx, pointerKey(name), val, cur.rev)
			}
			return err
		})
		var apiErr *jetstream.APIError
		switch {
		case err == nil:
			return cur.object, nil
		case errors.Is(err, jetstream.ErrKeyExists),
			errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence:
			continue // another writer published first: compare again
		default:
			return "", fmt.Errorf("jsstore: publish snapshot: %w", err)
		}
	}
	return "", errors.New("jsstore: publish snapshot: the pointer kept changing")
}

// deleteObject removes an object's meta and chunks (best effort: a failure
// leaves it to sweep).
func (c *Checkpoints) deleteObject(ctx context.Context, obj string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	info, err := c.obs.GetInfo(ctx, obj, jetstream.GetObjectInfoShowDeleted())
	if err != nil {
		return
	}
	st, err := c.js.Stream(ctx, "OBJ_"+SnapshotsBucket)
	if err != nil {
		return
	}
	metaSubj := "$O." + SnapshotsBucket + ".M." + base64.URLEncoding.EncodeToString([]byte(obj))
	_ = jsreq.Do(ctx, func(ctx context.Context) error { return st.Purge(ctx, jetstream.WithPurgeSubject(metaSubj)) })
	if info.NUID != "" {
		chunks := "$O." + SnapshotsBucket + ".C." + info.NUID
		_ = jsreq.Do(ctx, func(ctx context.Context) error { return st.Purge(ctx, jetstream.WithPurgeSubject(chunks)) })
	}
}

// sweep deletes the projection's objects that no pointer names and that
// are older than orphanAge (their writer stopped before publishing or
// deleting them), and objects written under the projection's bare name by
// earlier versions.
func (c *Checkpoints) sweep(ctx context.Context, name, keep string) {
	list, err := c.obs.List(ctx, jetstream.ListObjectsShowDeleted())
	if err != nil {
		return
	}
	cur, err := c.pointer(ctx, name)
	if err != nil {
		return
	}
	for _, o := range list {
		switch {
		case o.Name == keep || o.Name == cur.object:
		case o.Name == name, objectOf(name, o.Name) && (o.Deleted || time.Since(o.ModTime) > orphanAge):
			c.deleteObject(ctx, o.Name)
		}
	}
}

// lazyReader yields f's bytes, computed on the first Read.
// objectOf reports whether obj is the name PutSnapshot gives a snapshot of
// projection name: name, a dot and 26 characters of rand.Text, lowercased
// (so "a.b.<random>", of projection "a.b", is not one of "a").
func objectOf(name, obj string) bool {
	rest, ok := strings.CutPrefix(obj, name+".")
	return ok && len(rest) == 26 && !strings.Contains(rest, ".")
}

type lazyReader struct {
	f    func() []byte
	b    []byte
	done bool
}

func (l *lazyReader) Read(p []byte) (int, error) {
	if !l.done {
		l.b, l.done = l.f(), true
	}
	if len(l.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, l.b)
	l.b = l.b[n:]
	return n, nil
}
