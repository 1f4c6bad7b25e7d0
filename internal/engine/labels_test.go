package engine

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/multistream"
	"github.com/kinactor/kinactor/internal/shardfsm"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/messages"
)

func TestShardLabels(t *testing.T) {
	for _, c := range []struct{ key, stream, shard string }{
		{"shardId-000000000001", "orders", "shardId-000000000001"},
		{"123456789012:payments:1700000000:shardId-000000000001", "payments", "shardId-000000000001"},
		{"123:bad:notanumber:shardId-1", "orders", "123:bad:notanumber:shardId-1"}, // not a multi-stream key
	} {
		if s, sh := ShardLabels(c.key, "orders"); s != c.stream || sh != c.shard {
			t.Errorf("ShardLabels(%q) = %q %q, want %q %q", c.key, s, sh, c.stream, c.shard)
		}
	}
}

// keyStream serves a multi-stream key's shard from a one-stream MemStream,
// as multistream.Set does for its streams.
type keyStream struct{ *stream.MemStream }

func (k keyStream) Iterator(ctx context.Context, key string, pos stream.Position) (string, error) {
	return k.MemStream.Iterator(ctx, multistream.ShardOf(key), pos)
}

// The per-shard series are labelled with the stream's name and the Kinesis
// shard id: the configured name for a plain shard id, the key's own for a
// multi-stream key. A shard that finishes deletes them under both labels.
func TestShardSeriesLabelledByStream(t *testing.T) {
	for _, c := range []struct{ name, key, stream string }{
		{"single-stream", testShard, "test"},
		{"multi-stream", "123456789012:payments:1700000000:" + testShard, "payments"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var s sink
			r := newShardRig(t, actors.FuncProcessor(func(_ context.Context, b messages.Batch) error { s.add(b); return nil }))
			r.deps.Stream = keyStream{r.mem}
			ctx := context.Background()
			if c.key != testShard {
				if err := r.store.Create(ctx, lease.Lease{Key: c.key}); err != nil {
					t.Fatal(err)
				}
			}
			row, err := r.store.Get(ctx, c.key)
			if err != nil {
				t.Fatal(err)
			}
			held, err := r.store.Take(ctx, row, "me", lease.TakeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			recs := r.put(names("a", 5)...)
			r.rec = &parentRec{props: NewShardProps(r.deps, held, TakeSent{At: time.Now()})}
			r.parent = r.sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &recordingParent{rec: r.rec} }))
			s.waitFor(t, names("a", 5))
			m := r.deps.Metrics
			eventually(t, time.Second, "the records counted", func() bool {
				return testutil.ToFloat64(m.RecordsProcessed.WithLabelValues(c.stream, testShard)) == 5
			})
			if n := testutil.ToFloat64(m.BytesProcessed.WithLabelValues(c.stream, testShard)); n != 20 {
				t.Errorf("bytes processed %v, want 20", n)
			}
			if n := testutil.CollectAndCount(m.RecordsProcessed); n != 1 {
				t.Errorf("%d records_processed series, want 1", n)
			}
			mfs, err := r.reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			for _, mf := range mfs {
				for _, mt := range mf.GetMetric() {
					var labels []string
					for _, l := range mt.GetLabel() {
						labels = append(labels, l.GetName()+"="+l.GetValue())
					}
					if slices.Contains(labels, "shard="+testShard) && !slices.Equal(labels, []string{"shard=" + testShard, "stream=" + c.stream}) {
						t.Errorf("%s labels %v, want shard=%s stream=%s", mf.GetName(), labels, testShard, c.stream)
					}
				}
			}
			eventually(t, 2*time.Second, "the checkpoint", func() bool {
				l, err := r.store.Get(ctx, c.key)
				return err == nil && l.Checkpoint.SequenceNumber == recs[4].SequenceNumber
			})
			r.sys.Root.Send(r.child(), shardfsm.StopRequested{})
			if f := r.waitFinished(); f.Outcome != shardfsm.Released || f.ShardID != c.key {
				t.Fatalf("finished %+v", f)
			}
			if got := seriesOf(t, r.reg, testShard); len(got) != 0 {
				t.Errorf("series after the shard finished: %v", got)
			}
		})
	}
}
