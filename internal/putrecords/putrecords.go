// Package putrecords is the one PutRecords loop of the kinactor command,
// the failure destination of kind kinesis (internal/failure) and the test
// environment (`kinactor produce`, the demos, the chaos and benchmark
// producer), and the numbered records they write.
//
// Per-key order: Writer.Put resends the entries a call reports as failed
// alone, in order, until they are written, and returns only then, so the
// next batch comes after them. A later entry of the same key that succeeded
// in the failed call is then ahead of the failed one; a caller that must
// rule this out puts at most one entry per key in a batch (Numbered's
// round-robin does so with batches of at most Keys records).
package putrecords

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/internal/backoff"
)

// Client is the part of *kinesis.Client a Writer uses.
type Client interface {
	PutRecords(ctx context.Context, in *kinesis.PutRecordsInput, optFns ...func(*kinesis.Options)) (*kinesis.PutRecordsOutput, error)
}

// DefaultMaxAttempts is Writer.MaxAttempts when it is not set.
const DefaultMaxAttempts = 20

// Writer writes batches of entries to one stream.
type Writer struct {
	Client Client
	Stream string
	// MaxAttempts bounds the PutRecords calls of one Put (default
	// DefaultMaxAttempts). Between two calls Put waits attempt × 100 ms,
	// at most 1 s.
	MaxAttempts int
	// RetryCalls: a call that fails as a whole is retried like failed
	// entries (the same entries again). Without it Put returns its error at
	// once.
	RetryCalls bool
	// CallTimeout bounds each call (0: none but Put's ctx).
	CallTimeout time.Duration
	// OnFailure, if set, is called after every call that failed or left
	// entries unwritten, with what failed: the call's error, or the code
	// and message of a failed entry.
	OnFailure func(error)
}

// Put writes entries (at most 500, PutRecords' limit) and returns, for
// each entry in order, the result of the call that wrote it (its shard and
// sequence number). Entries a call reports as failed are sent again, alone
// and in order, until every entry is written or MaxAttempts calls were
// made; then the error says how many are left. The results of the entries
// written so far are returned with an error too.
func (w Writer) Put(ctx context.Context, entries []types.PutRecordsRequestEntry) ([]types.PutRecordsResultEntry, error) {
	maxAttempts := w.MaxAttempts
	if maxAttempts <= 0 {
		maxAttempts = DefaultMaxAttempts
	}
	results := make([]types.PutRecordsResultEntry, len(entries))
	pending := make([]int, len(entries)) // indexes of the entries not yet written, in order
	for i := range pending {
		pending[i] = i
	}
	for attempt := 1; len(pending) > 0; attempt++ {
		batch := make([]types.PutRecordsRequestEntry, len(pending))
		for j, i := range pending {
			batch[j] = entries[i]
		}
		out, err := w.call(ctx, batch)
		if err == nil {
			var failed []int
			for j, r := range out.Records {
				if r.ErrorCode != nil {
					failed = append(failed, pending[j])
					err = fmt.Errorf("%s: %s", aws.ToString(r.ErrorCode), aws.ToString(r.ErrorMessage))
					continue
				}
				results[pending[j]] = r
			}
			pending = failed
			if err == nil {
				break
			}
		} else if !w.RetryCalls {
			w.failed(err)
			return results, fmt.Errorf("PutRecords: %w", err)
		}
		w.failed(err)
		if attempt >= maxAttempts {
			return results, fmt.Errorf("PutRecords: %d of %d records not written after %d attempts: %w", len(pending), len(entries), attempt, err)
		}
		if serr := backoff.Sleep(ctx, min(time.Duration(attempt)*100*time.Millisecond, time.Second)); serr != nil {
			return results, fmt.Errorf("PutRecords: %d of %d records not written: %w (last error: %w)", len(pending), len(entries), serr, err)
		}
	}
	return results, nil
}

func (w Writer) failed(err error) {
	if w.OnFailure != nil {
		w.OnFailure(err)
	}
}

func (w Writer) call(ctx context.Context, batch []types.PutRecordsRequestEntry) (*kinesis.PutRecordsOutput, error) {
	if w.CallTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, w.CallTimeout)
		defer cancel()
	}
	out, err := w.Client.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(w.Stream), Records: batch})
	if err == nil && len(out.Records) != len(batch) {
		err = fmt.Errorf("%d results for %d records", len(out.Records), len(batch))
	}
	return out, err
}

// Numbered makes the records the producers write: record i goes to
// partition key k(i mod Keys) with data exactly {"pk":"k7","n":12}, n
// counting per key from a start.
type Numbered struct {
	start int
	made  []int // records made per key
	i     int   // records made in all
}

// NewNumbered returns a Numbered over keys keys (at least 1) whose n
// begin at start.
func NewNumbered(keys, start int) *Numbered {
	return &Numbered{start: start, made: make([]int, max(keys, 1))}
}

// Next returns the next n records.
func (g *Numbered) Next(n int) []types.PutRecordsRequestEntry {
	entries := make([]types.PutRecordsRequestEntry, 0, n)
	for range n {
		k := g.i % len(g.made)
		pk := "k" + strconv.Itoa(k)
		entries = append(entries, types.PutRecordsRequestEntry{
			PartitionKey: aws.String(pk),
			Data:         fmt.Appendf(nil, `{"pk":%q,"n":%d}`, pk, g.start+g.made[k]),
		})
		g.made[k]++
		g.i++
	}
	return entries
}

// Made returns how many records Next has made for each key k0..k{Keys-1}.
func (g *Numbered) Made() []int { return slices.Clone(g.made) }
