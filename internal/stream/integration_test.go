package stream_test

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// These tests run against real local servers started by localaws; they are
// skipped with -short (localaws.StartT skips them).

func startKinesis(t *testing.T, kind localaws.Kind) *kinesis.Client {
	t.Helper()
	env := localaws.StartT(t, kind, "")
	return env.KinesisClient()
}

// createStream creates a stream with shards shards, waits for it to be
// ACTIVE and returns its ARN (localaws.CreateStreamT).
func createStream(t testing.TB, kc *kinesis.Client, name string, shards int32) string {
	t.Helper()
	return localaws.CreateStreamT(t, kc, name, shards)
}

// waitActive waits until the stream is ACTIVE and returns its ARN
// (localaws.WaitStreamT).
func waitActive(t testing.TB, kc *kinesis.Client, name string) string {
	t.Helper()
	return localaws.WaitStreamT(t, kc, name)
}

// put is one record put, with where it went.
type put struct {
	data    string
	shardID string
	seq     string
}

// putRecords puts n records with data prefix-00000... and returns them in
// put order.
func putRecords(t testing.TB, kc *kinesis.Client, name, prefix string, n int) []put {
	t.Helper()
	ctx := context.Background()
	var puts []put
	for start := 0; start < n; start += 500 {
		end := min(start+500, n)
		var entries []types.PutRecordsRequestEntry
		for i := start; i < end; i++ {
			entries = append(entries, types.PutRecordsRequestEntry{
				Data:         fmt.Appendf(nil, "%s-%05d", prefix, i),
				PartitionKey: aws.String(fmt.Sprintf("pk-%d", i)),
			})
		}
		out, err := kc.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(name), Records: entries})
		if err != nil {
			t.Fatalf("PutRecords: %v", err)
		}
		if aws.ToInt32(out.FailedRecordCount) != 0 {
			t.Fatalf("PutRecords: %d failed", aws.ToInt32(out.FailedRecordCount))
		}
		for i, r := range out.Records {
			puts = append(puts, put{data: string(entries[i].Data), shardID: aws.ToString(r.ShardId), seq: aws.ToString(r.SequenceNumber)})
		}
	}
	return puts
}

// readToEmpty reads shardID from pos until a GetRecords returns no records
// (all puts are done before, so the shard is caught up) or the shard ends.
func readToEmpty(t testing.TB, c *stream.Client, shardID string, pos stream.Position, limit int32) []stream.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	it, err := c.Iterator(ctx, shardID, pos)
	if err != nil {
		t.Fatalf("Iterator %s %+v: %v", shardID, pos, err)
	}
	var recs []stream.Record
	for {
		b, err := c.GetRecords(ctx, it, limit)
		if err != nil {
			t.Fatalf("GetRecords %s: %v", shardID, err)
		}
		if len(b.Records) > int(limit) {
			t.Fatalf("GetRecords returned %d > limit %d", len(b.Records), limit)
		}
		recs = append(recs, b.Records...)
		if len(b.Records) == 0 || b.ShardEnd() {
			return recs
		}
		it = b.NextIterator
	}
}

// readToEnd reads a closed shard until NextIterator is "" and returns its
// records and the last batch.
func readToEnd(t testing.TB, c *stream.Client, shardID string) ([]stream.Record, stream.Batch) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	it, err := c.Iterator(ctx, shardID, stream.Position{Type: types.ShardIteratorTypeTrimHorizon})
	if err != nil {
		t.Fatalf("Iterator %s: %v", shardID, err)
	}
	var recs []stream.Record
	for {
		b, err := c.GetRecords(ctx, it, 1000)
		if err != nil {
			t.Fatalf("GetRecords %s: %v", shardID, err)
		}
		recs = append(recs, b.Records...)
		if b.ShardEnd() {
			return recs, b
		}
		it = b.NextIterator
	}
}

func datas(recs []stream.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = string(r.Data)
	}
	return out
}

func putsOf(puts []put, shardID string) []put {
	var out []put
	for _, p := range puts {
		if p.shardID == shardID {
			out = append(out, p)
		}
	}
	return out
}

func putDatas(puts []put) []string {
	out := make([]string, len(puts))
	for i, p := range puts {
		out[i] = p.data
	}
	return out
}

func shardIDs(shards []stream.Shard) []string {
	out := make([]string, len(shards))
	for i, s := range shards {
		out[i] = s.ID
	}
	return out
}

func find(shards []stream.Shard, id string) stream.Shard {
	for _, s := range shards {
		if s.ID == id {
			return s
		}
	}
	return stream.Shard{}
}

func TestKinesalite(t *testing.T) {
	kc := startKinesis(t, localaws.Kinesalite)
	ctx := context.Background()

	t.Run("ReadAndResume", func(t *testing.T) {
		createStream(t, kc, "read", 3)
		c := stream.NewClient(kc, "read", "")
		shards, err := c.ListShards(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(shards) != 3 {
			t.Fatalf("ListShards: %v", shards)
		}
		for _, s := range shards {
			if s.Closed() || s.StartingSequenceNumber == "" || s.StartingHashKey == "" || s.EndingHashKey == "" || len(s.Parents()) != 0 {
				t.Errorf("shard %+v", s)
			}
		}
		puts := putRecords(t, kc, "read", "r", 300)
		total := 0
		for _, s := range shards {
			want := putsOf(puts, s.ID)
			got := readToEmpty(t, c, s.ID, stream.Position{Type: types.ShardIteratorTypeTrimHorizon}, 37)
			total += len(got)
			if !slices.Equal(datas(got), putDatas(want)) {
				t.Fatalf("shard %s: read %v, want %v", s.ID, datas(got), putDatas(want))
			}
			for i, r := range got {
				if r.SequenceNumber != want[i].seq || r.PartitionKey == "" || r.ApproximateArrivalTimestamp.IsZero() {
					t.Fatalf("shard %s record %d: %+v (put seq %s)", s.ID, i, r, want[i].seq)
				}
			}
			if len(want) < 2 {
				continue
			}
			mid := len(want) / 2
			after := readToEmpty(t, c, s.ID, stream.Position{Type: types.ShardIteratorTypeAfterSequenceNumber, SequenceNumber: want[mid].seq}, 10000)
			if !slices.Equal(datas(after), putDatas(want[mid+1:])) {
				t.Errorf("shard %s AFTER %s: %v, want %v", s.ID, want[mid].seq, datas(after), putDatas(want[mid+1:]))
			}
			at := readToEmpty(t, c, s.ID, stream.Position{Type: types.ShardIteratorTypeAtSequenceNumber, SequenceNumber: want[mid].seq}, 10000)
			if !slices.Equal(datas(at), putDatas(want[mid:])) {
				t.Errorf("shard %s AT %s: %v, want %v", s.ID, want[mid].seq, datas(at), putDatas(want[mid:]))
			}
		}
		if total != 300 {
			t.Errorf("read %d records, want 300", total)
		}
	})

	t.Run("Latest", func(t *testing.T) {
		createStream(t, kc, "latest", 3)
		c := stream.NewClient(kc, "latest", "")
		putRecords(t, kc, "latest", "old", 60)
		shards, err := c.ListShards(ctx)
		if err != nil {
			t.Fatal(err)
		}
		its := map[string]string{}
		for _, s := range shards {
			if its[s.ID], err = c.Iterator(ctx, s.ID, stream.Position{Type: types.ShardIteratorTypeLatest}); err != nil {
				t.Fatal(err)
			}
		}
		puts := putRecords(t, kc, "latest", "new", 60)
		for _, s := range shards {
			b, err := c.GetRecords(ctx, its[s.ID], 10000)
			if err != nil {
				t.Fatal(err)
			}
			if want := putDatas(putsOf(puts, s.ID)); !slices.Equal(datas(b.Records), want) {
				t.Errorf("shard %s LATEST: %v, want %v", s.ID, datas(b.Records), want)
			}
		}
	})

	t.Run("AtTimestamp", func(t *testing.T) {
		createStream(t, kc, "ts", 1)
		c := stream.NewClient(kc, "ts", "")
		putRecords(t, kc, "ts", "before", 20)
		// Separate the two batches' arrival times from the boundary by a
		// few milliseconds: the servers keep millisecond timestamps.
		<-time.After(5 * time.Millisecond)
		boundary := time.Now()
		<-time.After(5 * time.Millisecond)
		puts := putRecords(t, kc, "ts", "after", 20)
		got := readToEmpty(t, c, "shardId-000000000000", stream.Position{Type: types.ShardIteratorTypeAtTimestamp, Timestamp: boundary}, 10000)
		if !slices.Equal(datas(got), putDatas(puts)) {
			t.Errorf("AT_TIMESTAMP: %v, want %v", datas(got), putDatas(puts))
		}
		for _, r := range got {
			if r.ApproximateArrivalTimestamp.Before(boundary.Truncate(time.Millisecond)) {
				t.Errorf("record %s arrived %v, before %v", r.Data, r.ApproximateArrivalTimestamp, boundary)
			}
		}
	})

	t.Run("Errors", func(t *testing.T) {
		c := stream.NewClient(kc, "no-such-stream", "")
		if _, err := c.ListShards(ctx); !errors.Is(err, stream.ErrShardNotFound) {
			t.Errorf("ListShards on a missing stream: %v", err)
		}
		createStream(t, kc, "errs", 1)
		c = stream.NewClient(kc, "errs", "")
		if _, err := c.Iterator(ctx, "shardId-000000000009", stream.Position{Type: types.ShardIteratorTypeTrimHorizon}); !errors.Is(err, stream.ErrShardNotFound) {
			t.Errorf("Iterator on a missing shard: %v", err)
		}
	})

	t.Run("ListShardsMaxResults", func(t *testing.T) {
		createStream(t, kc, "pages", 5)
		api := &countingAPI{API: kc}
		c := stream.NewClient(api, "pages", "")
		c.ListShardsMaxResults = 2
		shards, err := c.ListShards(ctx)
		if err != nil || len(shards) != 5 {
			t.Fatalf("ListShards: %v %v", shardIDs(shards), err)
		}
		t.Logf("kinesalite: ListShards with MaxResults 2 over 5 shards took %d call(s)", api.lists.Load())
	})

	t.Run("StreamARN", func(t *testing.T) {
		arn := createStream(t, kc, "arn", 1)
		_, err := stream.NewClient(kc, "", arn).ListShards(ctx)
		t.Logf("kinesalite: ARN %q; ListShards by StreamARN only: %v", arn, err)
	})
}

// countingAPI counts ListShards calls.
type countingAPI struct {
	stream.API
	lists atomic.Int32
}

func (c *countingAPI) ListShards(ctx context.Context, in *kinesis.ListShardsInput, opts ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error) {
	c.lists.Add(1)
	return c.API.ListShards(ctx, in, opts...)
}

func TestKinesisMock(t *testing.T) {
	kc := startKinesis(t, localaws.KinesisMock)
	ctx := context.Background()

	t.Run("ListShardsPagination", func(t *testing.T) {
		arn := createStream(t, kc, "pages", 5)
		for _, byARN := range []bool{false, true} {
			api := &countingAPI{API: kc}
			c := stream.NewClient(api, "pages", "")
			if byARN {
				c = stream.NewClient(api, "", arn)
			}
			c.ListShardsMaxResults = 2
			shards, err := c.ListShards(ctx)
			if err != nil {
				t.Fatalf("byARN=%v: %v", byARN, err)
			}
			want := []string{"shardId-000000000000", "shardId-000000000001", "shardId-000000000002", "shardId-000000000003", "shardId-000000000004"}
			if !slices.Equal(shardIDs(shards), want) {
				t.Errorf("byARN=%v: shards %v", byARN, shardIDs(shards))
			}
			if n := api.lists.Load(); n != 3 {
				t.Errorf("byARN=%v: %d ListShards calls, want 3 pages of at most 2", byARN, n)
			}
		}
	})

	t.Run("SplitShard", func(t *testing.T) {
		createStream(t, kc, "split", 2)
		c := stream.NewClient(kc, "split", "")
		puts := putRecords(t, kc, "split", "s", 40)
		before, err := c.ListShards(ctx)
		if err != nil {
			t.Fatal(err)
		}
		parent := before[0]
		lo, _ := new(big.Int).SetString(parent.StartingHashKey, 10)
		hi, _ := new(big.Int).SetString(parent.EndingHashKey, 10)
		mid := new(big.Int).Rsh(new(big.Int).Add(lo, hi), 1)
		if _, err := kc.SplitShard(ctx, &kinesis.SplitShardInput{
			StreamName: aws.String("split"), ShardToSplit: aws.String(parent.ID), NewStartingHashKey: aws.String(mid.String()),
		}); err != nil {
			t.Fatal(err)
		}
		waitActive(t, kc, "split")
		after, err := c.ListShards(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if p := find(after, parent.ID); !p.Closed() {
			t.Errorf("parent after split: %+v", p)
		}
		kids := stream.ChildrenFromList(after, parent.ID)
		if len(kids) != 2 {
			t.Fatalf("children of %s: %v (all %v)", parent.ID, kids, after)
		}
		for _, k := range kids {
			if k.ParentShardID != parent.ID || k.AdjacentParentShardID != "" || k.Closed() {
				t.Errorf("child %+v", k)
			}
		}
		if kids[0].StartingHashKey != parent.StartingHashKey || kids[1].EndingHashKey != parent.EndingHashKey || kids[1].StartingHashKey != mid.String() {
			t.Errorf("children hash ranges %+v / %+v, parent %+v", kids[0], kids[1], parent)
		}
		recs, last := readToEnd(t, c, parent.ID)
		if want := putDatas(putsOf(puts, parent.ID)); !slices.Equal(datas(recs), want) {
			t.Errorf("closed parent read %v, want %v", datas(recs), want)
		}
		t.Logf("kinesis-mock: ChildShards at the end of a split parent: %+v", last.ChildShards)
		if last.ChildShards != nil && !slices.Equal(shardIDs(last.ChildShards), shardIDs(kids)) {
			t.Errorf("ChildShards %v, ListShards children %v", last.ChildShards, kids)
		}
		for _, k := range last.ChildShards {
			if !slices.Equal(k.Parents(), []string{parent.ID}) {
				t.Errorf("ChildShard %+v", k)
			}
		}
	})

	t.Run("MergeShards", func(t *testing.T) {
		createStream(t, kc, "merge", 2)
		c := stream.NewClient(kc, "merge", "")
		putRecords(t, kc, "merge", "m", 20)
		before, err := c.ListShards(ctx)
		if err != nil {
			t.Fatal(err)
		}
		a, b := before[0], before[1]
		if _, err := kc.MergeShards(ctx, &kinesis.MergeShardsInput{
			StreamName: aws.String("merge"), ShardToMerge: aws.String(a.ID), AdjacentShardToMerge: aws.String(b.ID),
		}); err != nil {
			t.Fatal(err)
		}
		waitActive(t, kc, "merge")
		after, err := c.ListShards(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !find(after, a.ID).Closed() || !find(after, b.ID).Closed() {
			t.Errorf("parents after merge: %+v", after)
		}
		kids := stream.ChildrenFromList(after, a.ID)
		if len(kids) != 1 || kids[0].ParentShardID != a.ID || kids[0].AdjacentParentShardID != b.ID {
			t.Fatalf("merge child: %+v", kids)
		}
		if k := stream.ChildrenFromList(after, b.ID); len(k) != 1 || k[0].ID != kids[0].ID {
			t.Errorf("children of adjacent parent: %+v", k)
		}
		for _, p := range []stream.Shard{a, b} {
			_, last := readToEnd(t, c, p.ID)
			t.Logf("kinesis-mock: ChildShards at the end of merge parent %s: %+v", p.ID, last.ChildShards)
			if last.ChildShards == nil {
				continue
			}
			if len(last.ChildShards) != 1 || last.ChildShards[0].ID != kids[0].ID {
				t.Errorf("ChildShards %+v, want %s", last.ChildShards, kids[0].ID)
				continue
			}
			got := last.ChildShards[0].Parents()
			slices.Sort(got)
			if !slices.Equal(got, []string{a.ID, b.ID}) {
				t.Errorf("ChildShard parents %v", got)
			}
		}
	})

	t.Run("StreamARN", func(t *testing.T) {
		arn := createStream(t, kc, "arn", 1)
		if !strings.HasPrefix(arn, "arn:") {
			t.Fatalf("ARN %q", arn)
		}
		puts := putRecords(t, kc, "arn", "a", 10)
		c := stream.NewClient(kc, "ignored-when-arn-set", arn)
		shards, err := c.ListShards(ctx)
		if err != nil || len(shards) != 1 {
			t.Fatalf("ListShards by ARN: %v %v", shards, err)
		}
		got := readToEmpty(t, c, shards[0].ID, stream.Position{Type: types.ShardIteratorTypeTrimHorizon}, 3)
		if !slices.Equal(datas(got), putDatas(puts)) {
			t.Errorf("read by ARN %v, want %v", datas(got), putDatas(puts))
		}
	})
}
