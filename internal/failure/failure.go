// Package failure writes the records of batches that failed for good to a
// failure destination: a directory of JSONL files (Dir), another Kinesis
// stream (Stream) or a DynamoDB table (Table). DeadLetter turns a
// Destination into an actors.DeadLetterFunc, and Retry makes a Destination
// whose Write returns nil only once everything is written, trying again
// with capped exponential backoff until its context ends; together they are
// the node's dead-letter path with the records themselves, not only their
// metadata.
//
// The root package re-exports what a user needs (kinactor.FailureEntry,
// kinactor.FailureDestination, kinactor.FailureDir, kinactor.FailureStream,
// kinactor.FailureTable, kinactor.DeadLetterTo); `kinactor node
// --on-failure SPEC` parses SPEC with ParseSpec.
package failure

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/internal/backoff"
	"github.com/kinactor/kinactor/messages"
)

// Entry is one record of a batch that failed for good, with why. Its JSON
// form, the same in every destination that stores JSON (a line of a Dir
// file, the data of a Stream record), has these stable field names:
//
//	{"stream":"orders","shard":"shardId-000000000001","seq":"4959…","sub":0,
//	 "pk":"k7","arrival":"2026-05-01T12:00:00.123Z","data":"eyJuIjoxfQ==",
//	 "error":"poison","attempts":5,"failed_at":"2026-05-01T12:00:09.5Z"}
//
// data is the payload in standard base64 (absent when empty); arrival and
// failed_at are RFC 3339 with nanoseconds; stream is absent when unknown.
// A destination is at least once: an entry may be written twice (a Write
// that failed halfway is made again), so a reader dedupes by (shard, seq,
// sub).
type Entry struct {
	Stream            string    `json:"stream,omitempty"` // the stream read, when the adapter knows it
	Shard             string    `json:"shard"`
	SequenceNumber    string    `json:"seq"`
	SubSequenceNumber int64     `json:"sub"` // 0 unless de-aggregated from a KPL record
	PartitionKey      string    `json:"pk"`
	ArrivalTime       time.Time `json:"arrival"` // Kinesis's ApproximateArrivalTimestamp
	Data              []byte    `json:"data,omitempty"`
	Error             string    `json:"error"`    // the cause's text
	Attempts          int       `json:"attempts"` // failed deliveries of the record (0: too old to be delivered)
	FailedAt          time.Time `json:"failed_at"`
}

// Destination stores entries.
//
// Write stores entries, in order, and returns nil only once every one is
// durable (fsynced, acknowledged by Kinesis or DynamoDB). An error means
// some may be stored and some not: write them all again (Retry does). It
// honours ctx. A Destination is safe for concurrent use: Write is called
// from the dead-letter calls of many shards at once (those of one shard
// never overlap).
type Destination interface {
	Write(ctx context.Context, entries []Entry) error
}

// Kind is the kind of a destination spec.
type Kind string

// The kinds of ParseSpec.
const (
	KindDir      Kind = "dir"
	KindKinesis  Kind = "kinesis"
	KindDynamoDB Kind = "dynamodb"
)

// Spec is a parsed destination spec: a kind and its target (a directory, a
// stream name, a table name).
type Spec struct {
	Kind   Kind
	Target string
}

func (s Spec) String() string { return string(s.Kind) + ":" + s.Target }

const want = "(want dir:PATH, kinesis:STREAM or dynamodb:TABLE)"

// ParseSpec parses "dir:PATH", "kinesis:STREAM" or "dynamodb:TABLE". Its
// errors begin with the quoted spec, for the caller to prefix with the flag
// it came from, e.g. `--on-failure "s3:x": unknown kind "s3" (want …)`.
func ParseSpec(spec string) (Spec, error) {
	kind, target, ok := strings.Cut(spec, ":")
	if !ok {
		return Spec{}, fmt.Errorf("%q: no kind %s", spec, want)
	}
	s := Spec{Kind: Kind(kind), Target: target}
	switch s.Kind {
	case KindDir:
		if target == "" {
			return Spec{}, fmt.Errorf("%q: empty PATH %s", spec, want)
		}
	case KindKinesis:
		if !validName(target, 1, 128) {
			return Spec{}, fmt.Errorf("%q: invalid stream name %q (1-128 of a-zA-Z0-9_.-)", spec, target)
		}
	case KindDynamoDB:
		if !validName(target, 3, 255) {
			return Spec{}, fmt.Errorf("%q: invalid table name %q (3-255 of a-zA-Z0-9_.-)", spec, target)
		}
	default:
		return Spec{}, fmt.Errorf("%q: unknown kind %q %s", spec, kind, want)
	}
	return s, nil
}

// validName: Kinesis stream and DynamoDB table names share an alphabet.
func validName(s string, lo, hi int) bool {
	if len(s) < lo || len(s) > hi {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// DefaultRetryPolicy is Retry's backoff when its policy is the zero value.
var DefaultRetryPolicy = backoff.Policy{Base: 200 * time.Millisecond, Cap: 10 * time.Second}

// Retry returns a Destination whose Write calls d.Write until it returns
// nil, waiting p.Delay(n) after the n-th failure (the zero Policy:
// DefaultRetryPolicy), and gives up only when ctx ends: then it returns
// the last error joined with ctx's. It never returns nil unless d wrote
// every entry. onError, if set, is called after each failed attempt.
func Retry(d Destination, p backoff.Policy, onError func(attempt int, err error)) Destination {
	if p.Base <= 0 || p.Cap < p.Base {
		p = DefaultRetryPolicy
	}
	return retrying{d: d, p: p, onError: onError}
}

type retrying struct {
	d       Destination
	p       backoff.Policy
	onError func(int, error)
}

func (r retrying) Write(ctx context.Context, entries []Entry) error {
	for n := 1; ; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := r.d.Write(ctx, entries)
		if err == nil {
			return nil
		}
		if r.onError != nil {
			r.onError(n, err)
		}
		if serr := backoff.Sleep(ctx, r.p.Delay(n, nil)); serr != nil {
			return fmt.Errorf("failure destination: not written after %d attempts: %w", n, errors.Join(err, serr))
		}
	}
}

// DeadLetter returns an actors.DeadLetterFunc that writes every record of
// the batch to d as an Entry (Stream stream, the batch's shard, the cause's
// text, batch.Attempt as Attempts, the time of the call as FailedAt) and
// returns d's error: the node then checkpoints past the batch only if d
// wrote all of it. Give it Retry(d, …) so that a failing destination is
// retried with backoff within the call (until ProcessTimeout ends it).
func DeadLetter(d Destination, stream string) actors.DeadLetterFunc {
	return func(ctx context.Context, shardID string, batch messages.Batch, cause error) error {
		if len(batch.Records) == 0 {
			return nil
		}
		return d.Write(ctx, Entries(stream, shardID, batch, cause, time.Now()))
	}
}

// Entries makes the entries of a dead-lettered batch.
func Entries(stream, shardID string, batch messages.Batch, cause error, failedAt time.Time) []Entry {
	text := ""
	if cause != nil {
		text = cause.Error()
	}
	if batch.ShardID != "" {
		shardID = batch.ShardID // the shard id, also in a multi-stream application
	}
	if batch.Stream != "" {
		stream = batch.Stream
	}
	entries := make([]Entry, len(batch.Records))
	for i, r := range batch.Records {
		entries[i] = Entry{
			Stream:            stream,
			Shard:             shardID,
			SequenceNumber:    r.SequenceNumber,
			SubSequenceNumber: r.SubSequenceNumber,
			PartitionKey:      r.PartitionKey,
			ArrivalTime:       r.ApproximateArrivalTimestamp,
			Data:              r.Data,
			Error:             text,
			Attempts:          batch.Attempt,
			FailedAt:          failedAt,
		}
	}
	return entries
}
