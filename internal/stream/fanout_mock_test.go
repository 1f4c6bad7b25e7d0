package stream_test

// kinesis-mock and SubscribeToShard
//
// kinesis-mock answers SubscribeToShard with an event stream that starts
// directly with SubscribeToShardEvent messages. The Go SDK (awsjson 1.1,
// an RPC protocol) expects the first message to be an event with
// :event-type "initial-response" carrying the operation output, and fails
// with "expected initial-response" otherwise. Real AWS sends it.
//
// The workaround lives here, in a test file, never in the production path:
// mockTransport is an http.RoundTripper given to the test's Kinesis client
// (kinesis.Options.HTTPClient). For a successful SubscribeToShard response
// it wraps the body in a reader that first yields one encoded event-stream
// message (:message-type event, :event-type initial-response, no payload,
// encoded with smithy-go's eventstream encoder, CRCs included) and then
// the server's bytes. The SDK reads the inserted message as the (empty)
// operation output and the server's events as usual.
//
// The same transport can end an event stream after N SubscribeToShardEvent
// messages (cutAfter): the reader decodes the server's messages one by one,
// re-encodes them, and returns io.EOF after the Nth, as if AWS had ended
// the subscription. FanOut must then resubscribe from the continuation
// without losing or repeating records.

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/internal/backoff"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/internal/testenv/kinesismock"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// readShardFanOut reads shardID through f from TRIM_HORIZON until want
// (-1 while unknown) records arrived or ctx ends, asking for a fresh
// Iterator after the last record on ErrExpiredIterator as the shard actor
// does.
func readShardFanOut(ctx context.Context, f *stream.FanOut, shardID string, want *atomic.Int64, limit int32) ([]stream.Record, error) {
	it, err := f.Iterator(ctx, shardID, stream.Position{Type: ktypes.ShardIteratorTypeTrimHorizon})
	if err != nil {
		return nil, err
	}
	var got []stream.Record
	for w := want.Load(); w < 0 || len(got) < int(w); w = want.Load() {
		if ctx.Err() != nil {
			return got, fmt.Errorf("shard %s: %d of %d records: %w", shardID, len(got), w, ctx.Err())
		}
		b, err := f.GetRecords(ctx, it, limit)
		switch {
		case errors.Is(err, stream.ErrExpiredIterator):
			pos := stream.Position{Type: ktypes.ShardIteratorTypeTrimHorizon}
			if n := len(got); n > 0 {
				pos = stream.Position{Type: ktypes.ShardIteratorTypeAfterSequenceNumber, SequenceNumber: got[n-1].SequenceNumber}
			}
			if it, err = f.Iterator(ctx, shardID, pos); err != nil {
				return got, err
			}
			continue
		case errors.Is(err, stream.ErrThrottled):
			time.Sleep(20 * time.Millisecond)
			continue
		case err != nil:
			return got, fmt.Errorf("shard %s: %w", shardID, err)
		}
		if len(b.Records) > int(limit) {
			return got, fmt.Errorf("shard %s: %d records > limit %d", shardID, len(b.Records), limit)
		}
		got = append(got, b.Records...)
		if b.ShardEnd() {
			return got, fmt.Errorf("shard %s ended unexpectedly after %d records", shardID, len(got))
		}
		it = b.NextIterator
	}
	return got, nil
}

func TestFanOutKinesisMockEndToEnd(t *testing.T) {
	env := localaws.StartT(t, localaws.KinesisMock, "")
	tr := &kinesismock.Transport{CutAfter: 2}
	kc := kinesismock.Client(env, tr)
	const name = "efo"
	createStream(t, kc, name, 4)

	before := putRecords(t, kc, name, "before-", 120)

	f := stream.NewFanOut(kc, name, "kinactor-test",
		stream.WithFanOutBackoff(backoff.Policy{Base: 20 * time.Millisecond, Cap: 200 * time.Millisecond}),
		stream.WithFanOutMaxWait(500*time.Millisecond))
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := f.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.Register(ctx); err != nil { // already exists: fine
		t.Fatalf("second Register: %v", err)
	}
	if f.ConsumerARN() == "" || f.StreamARN() == "" {
		t.Fatalf("ARNs not set: consumer %q stream %q", f.ConsumerARN(), f.StreamARN())
	}
	shards, err := f.ListShards(ctx)
	if err != nil || len(shards) != 4 {
		t.Fatalf("ListShards = %d shards, %v", len(shards), err)
	}

	// Readers start now, while half the records are still to be written;
	// each learns how many records its shard holds once the writes are done.
	type result struct {
		recs []stream.Record
		err  error
	}
	results := map[string]chan result{}
	wants := map[string]*atomic.Int64{}
	for _, s := range shards {
		ch := make(chan result, 1)
		w := &atomic.Int64{}
		w.Store(-1)
		results[s.ID], wants[s.ID] = ch, w
		go func(id string) {
			recs, err := readShardFanOut(ctx, f, id, w, 7)
			ch <- result{recs, err}
		}(s.ID)
	}
	all := before
	for i := range 4 {
		time.Sleep(600 * time.Millisecond)
		all = append(all, putRecords(t, kc, name, fmt.Sprintf("during%d-", i), 30)...)
	}
	wantBy := map[string][]string{}
	for _, p := range all {
		wantBy[p.shardID] = append(wantBy[p.shardID], p.seq)
	}
	const total = 120 + 4*30
	for _, s := range shards {
		wants[s.ID].Store(int64(len(wantBy[s.ID])))
	}
	for _, s := range shards {
		r := <-results[s.ID]
		if r.err != nil {
			t.Fatalf("shard %s: %v", s.ID, r.err)
		}
		var gotSeqs []string
		for _, rec := range r.recs {
			gotSeqs = append(gotSeqs, rec.SequenceNumber)
		}
		if fmt.Sprint(gotSeqs) != fmt.Sprint(wantBy[s.ID]) {
			t.Errorf("shard %s: got %d records %v\nwant %d %v", s.ID, len(gotSeqs), gotSeqs, len(wantBy[s.ID]), wantBy[s.ID])
		}
	}
	t.Logf("%d records over 4 shards; %d subscriptions, %d cut by the transport", total, tr.Subscribes.Load(), tr.Cuts.Load())
	if tr.Cuts.Load() == 0 {
		t.Errorf("no subscription was cut: the resubscription path was not exercised")
	}
}
