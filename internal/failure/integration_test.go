package failure

import (
	"context"
	"encoding/json"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// entries returns n entries of two shards and a few keys, binary payloads
// and KPL sub-sequence numbers among them.
func entries(n int) []Entry {
	out := make([]Entry, n)
	for i := range out {
		out[i] = entry("shardId-00000000000"+strconv.Itoa(i%2), strconv.Itoa(49590000000000+i), int64(i%3), "k"+strconv.Itoa(i%4), "payload\x00\xff"+strconv.Itoa(i))
	}
	return out
}

// TestStreamDestination writes entries to a kinesalite stream and reads
// them back: every field, each under its own partition key.
func TestStreamDestination(t *testing.T) {
	env := localaws.StartT(t, localaws.Kinesalite, "")
	kc := env.KinesisClient()
	localaws.CreateStreamT(t, kc, "failed", 2)
	want := entries(30)
	ctx := context.Background()
	d := NewStream(kc, "failed")
	if err := d.Write(ctx, want[:10]); err != nil {
		t.Fatal(err)
	}
	if err := d.Write(ctx, want[10:]); err != nil {
		t.Fatal(err)
	}

	shards, err := kc.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String("failed")})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Entry{} // by shard/seq/sub
	keyShard := map[string]string{}
	deadline := time.Now().Add(30 * time.Second)
	for _, s := range shards.Shards {
		it, err := kc.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{StreamName: aws.String("failed"), ShardId: s.ShardId, ShardIteratorType: ktypes.ShardIteratorTypeTrimHorizon})
		if err != nil {
			t.Fatal(err)
		}
		iter := it.ShardIterator
		for iter != nil && time.Now().Before(deadline) {
			r, err := kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: iter})
			if err != nil {
				t.Fatal(err)
			}
			for _, rec := range r.Records {
				var e Entry
				if err := json.Unmarshal(rec.Data, &e); err != nil {
					t.Fatalf("record %s: %v", rec.Data, err)
				}
				if pk := aws.ToString(rec.PartitionKey); pk != e.PartitionKey {
					t.Errorf("entry of key %s written under key %s", e.PartitionKey, pk)
				}
				if sh, ok := keyShard[e.PartitionKey]; ok && sh != aws.ToString(s.ShardId) {
					t.Errorf("key %s in shards %s and %s", e.PartitionKey, sh, aws.ToString(s.ShardId))
				}
				keyShard[e.PartitionKey] = aws.ToString(s.ShardId)
				got[e.Shard+"/"+e.SequenceNumber+"/"+strconv.FormatInt(e.SubSequenceNumber, 10)] = e
			}
			if len(r.Records) == 0 && aws.ToInt64(r.MillisBehindLatest) == 0 {
				break
			}
			iter = r.NextShardIterator
		}
	}
	if len(got) != len(want) {
		t.Fatalf("read back %d entries, want %d", len(got), len(want))
	}
	for _, w := range want {
		g := got[w.Shard+"/"+w.SequenceNumber+"/"+strconv.FormatInt(w.SubSequenceNumber, 10)]
		if !reflect.DeepEqual(g, w) {
			t.Errorf("read back %+v, want %+v", g, w)
		}
	}
}

// TestTableDestination writes entries to DynamoDB Local and reads the
// items back; the same entries written again leave one item each.
func TestTableDestination(t *testing.T) {
	env := localaws.StartT(t, "", localaws.DynamoDBLocal)
	ddb := env.DynamoDBClient()
	ctx := context.Background()
	d := NewTable(ddb, "failed-records")
	if err := d.EnsureTable(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.EnsureTable(ctx); err != nil { // exists: used as it is
		t.Fatal(err)
	}
	localaws.WaitTableT(t, ddb, "failed-records")
	want := entries(60) // three BatchWriteItem calls
	if err := d.Write(ctx, want); err != nil {
		t.Fatal(err)
	}
	if err := d.Write(ctx, append(want[:5:5], want[:5]...)); err != nil { // twice again, in one chunk too
		t.Fatal(err)
	}
	var items []map[string]types.AttributeValue
	p := dynamodb.NewScanPaginator(ddb, &dynamodb.ScanInput{TableName: aws.String("failed-records"), ConsistentRead: aws.Bool(true)})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, out.Items...)
	}
	if len(items) != len(want) {
		t.Fatalf("%d items, want %d (one per entry)", len(items), len(want))
	}
	got := map[string]Entry{}
	for _, it := range items {
		e := fromItem(t, it)
		if pos := it[AttrPosition].(*types.AttributeValueMemberS).Value; pos != Position(e.SequenceNumber, e.SubSequenceNumber) {
			t.Errorf("position %q of %+v", pos, e)
		}
		got[e.Shard+"/"+e.SequenceNumber+"/"+strconv.FormatInt(e.SubSequenceNumber, 10)] = e
	}
	for _, w := range want {
		g := got[w.Shard+"/"+w.SequenceNumber+"/"+strconv.FormatInt(w.SubSequenceNumber, 10)]
		if !reflect.DeepEqual(g, w) {
			t.Errorf("item %+v, want %+v", g, w)
		}
	}
	// A shard's items come back in stream order from a Query.
	out, err := ddb.Query(ctx, &dynamodb.QueryInput{
		TableName:                 aws.String("failed-records"),
		KeyConditionExpression:    aws.String("#s = :s"),
		ExpressionAttributeNames:  map[string]string{"#s": AttrShard},
		ExpressionAttributeValues: map[string]types.AttributeValue{":s": &types.AttributeValueMemberS{Value: "shardId-000000000000"}},
		ConsistentRead:            aws.Bool(true),
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(out.Items); i++ {
		a, b := fromItem(t, out.Items[i-1]), fromItem(t, out.Items[i])
		if n, m := mustInt(t, a.SequenceNumber), mustInt(t, b.SequenceNumber); n > m || n == m && a.SubSequenceNumber >= b.SubSequenceNumber {
			t.Fatalf("query order: %s/%d before %s/%d", a.SequenceNumber, a.SubSequenceNumber, b.SequenceNumber, b.SubSequenceNumber)
		}
	}
}

func mustInt(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func fromItem(t *testing.T, it map[string]types.AttributeValue) Entry {
	t.Helper()
	str := func(k string) string {
		if v, ok := it[k].(*types.AttributeValueMemberS); ok {
			return v.Value
		}
		return ""
	}
	num := func(k string) int64 {
		v, ok := it[k].(*types.AttributeValueMemberN)
		if !ok {
			t.Fatalf("item %v: %s not a number", it, k)
		}
		return mustInt(t, v.Value)
	}
	tm := func(k string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, str(k))
		if err != nil {
			t.Fatalf("item %v: %s: %v", it, k, err)
		}
		return v
	}
	e := Entry{Stream: str(AttrStream), Shard: str(AttrShard), SequenceNumber: str(AttrSeq), SubSequenceNumber: num(AttrSub),
		PartitionKey: str(AttrPartitionKey), ArrivalTime: tm(AttrArrival), Error: str(AttrError), Attempts: int(num(AttrAttempts)), FailedAt: tm(AttrFailedAt)}
	if b, ok := it[AttrData].(*types.AttributeValueMemberB); ok {
		e.Data = b.Value
	}
	return e
}
