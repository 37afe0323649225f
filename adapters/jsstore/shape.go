package jsstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The stream's shape guarded (issue 9.3). Whoever can administer JetStream
// can change a stream under tokenline: allow deletes and purges, add an age
// or size limit that silently drops history, change the subjects, the
// replicas. Open does not apply its configuration over such a change (it
// would hide it): it records what differs, and tokenline refuses to become
// ready (app: /readyz "stream: ...") until an operator restores it. The
// check runs again periodically (Store.CheckShape).

// ShapeProblems compares a stream's configuration with the one tokenline
// requires and lists each guarded difference in words (none: nil). Only
// what protects the history is guarded: subjects, storage, retention,
// DenyDelete, DenyPurge, no age, message, byte or per-subject limit, and
// the replicas. Other fields (description, duplicates window, direct get)
// are left to Open's update.
func ShapeProblems(have, want jetstream.StreamConfig) []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	if !slices.Equal(sorted(have.Subjects), sorted(want.Subjects)) {
		add("subjects are %v, tokenline requires %v", have.Subjects, want.Subjects)
	}
	if have.Storage != want.Storage {
		add("storage is %s, tokenline requires %s", have.Storage, want.Storage)
	}
	if have.Retention != want.Retention {
		add("retention is %s, tokenline requires %s", have.Retention, want.Retention)
	}
	if have.DenyDelete != want.DenyDelete {
		add("deny_delete is %t, tokenline requires %t", have.DenyDelete, want.DenyDelete)
	}
	if have.DenyPurge != want.DenyPurge {
		add("deny_purge is %t, tokenline requires %t", have.DenyPurge, want.DenyPurge)
	}
	if have.MaxAge != want.MaxAge {
		add("max_age is %s, tokenline requires %s", have.MaxAge, noLimitAge(want.MaxAge))
	}
	if limit(have.MaxMsgs) != limit(want.MaxMsgs) {
		add("max_msgs is %d, tokenline requires %s", have.MaxMsgs, noLimit(want.MaxMsgs))
	}
	if limit(have.MaxBytes) != limit(want.MaxBytes) {
		add("max_bytes is %d, tokenline requires %s", have.MaxBytes, noLimit(want.MaxBytes))
	}
	if limit(have.MaxMsgsPerSubject) != limit(want.MaxMsgsPerSubject) {
		add("max_msgs_per_subject is %d, tokenline requires %s", have.MaxMsgsPerSubject, noLimit(want.MaxMsgsPerSubject))
	}
	if max(have.Replicas, 1) != max(want.Replicas, 1) {
		add("replicas are %d, tokenline is configured for %d", max(have.Replicas, 1), max(want.Replicas, 1))
	}
	return p
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

// limit maps every "no limit" value (0 or negative) to -1.
func limit(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

func noLimit(n int64) string {
	if n <= 0 {
		return "no limit"
	}
	return fmt.Sprint(n)
}

func noLimitAge(d time.Duration) string {
	if d <= 0 {
		return "no limit"
	}
	return d.String()
}

// ErrShape says a stream or bucket is not shaped as tokenline requires.
var ErrShape = errors.New("jsstore: stream configuration changed")

// shapeError lists the problems of one stream.
func shapeError(stream string, problems []string) error {
	return fmt.Errorf("%w: stream %s: %s", ErrShape, stream, strings.Join(problems, "; "))
}

// CheckShape reads the event stream's and the checkpoint stream's
// configuration and compares them with what tokenline requires, and, for
// each bucket named, its stream's replicas and age limit (buckets: KV bucket
// name, or "OBJ_<name>" for an object store -> required max age, 0 for
// none). It returns nil, an error wrapping
// ErrShape that says what differs, or the error reading the configuration.
func (s *Store) CheckShape(ctx context.Context, buckets map[string]time.Duration) error {
	var errs []error
	check := func(want jetstream.StreamConfig) {
		st, err := s.js.Stream(ctx, want.Name)
		if err != nil {
			errs = append(errs, fmt.Errorf("jsstore: stream %s: %w", want.Name, err))
			return
		}
		if p := ShapeProblems(st.CachedInfo().Config, want); len(p) > 0 {
			errs = append(errs, shapeError(want.Name, p))
		}
	}
	check(StreamConfig(s.cfg))
	if s.checkpoints != nil {
		check(CheckpointStreamConfig(s.cfg))
	}
	names := make([]string, 0, len(buckets))
	for b := range buckets {
		names = append(names, b)
	}
	slices.Sort(names)
	for _, b := range names {
		stream := "KV_" + b
		if strings.HasPrefix(b, "OBJ_") { // an object store, named by its stream
			stream = b
		}
		st, err := s.js.Stream(ctx, stream)
		if err != nil {
			errs = append(errs, fmt.Errorf("jsstore: bucket %s: %w", b, err))
			continue
		}
		have := st.CachedInfo().Config
		var p []string
		if max(have.Replicas, 1) != max(s.cfg.Replicas, 1) {
			p = append(p, fmt.Sprintf("replicas are %d, tokenline is configured for %d", max(have.Replicas, 1), s.cfg.Replicas))
		}
		if have.MaxAge != buckets[b] {
			p = append(p, fmt.Sprintf("max_age is %s, tokenline requires %s", have.MaxAge, noLimitAge(buckets[b])))
		}
		if len(p) > 0 {
			errs = append(errs, fmt.Errorf("%w: bucket %s: %s", ErrShape, b, strings.Join(p, "; ")))
		}
	}
	return errors.Join(errs...)
}
