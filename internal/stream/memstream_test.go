package stream_test

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/internal/seqnum"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// TestStreamContract holds MemStream and Client on kinesalite to the same
// cases, so that tests of the shard actor on MemStream say something about
// the real service. What kinesalite cannot show (ChildShards, a lag while
// behind, iterator expiry, faults) is tested on MemStream alone below.
func TestStreamContract(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		for _, c := range streamContractCases {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				c.run(t, memSide{stream.NewMemStream("contract", c.shards)})
			})
		}
	})
	t.Run("kinesalite", func(t *testing.T) {
		t.Parallel()
		kc := localaws.StartT(t, localaws.Kinesalite, "").KinesisClient()
		var n atomic.Int64
		for _, c := range streamContractCases {
			t.Run(c.name, func(t *testing.T) {
				name := fmt.Sprintf("contract-%d", n.Add(1))
				createStream(t, kc, name, int32(c.shards))
				c.run(t, &realSide{Client: stream.NewClient(kc, name, ""), kc: kc, name: name})
			})
		}
	})
}

// contractSide is one implementation under the contract: the consumer's
// calls, and the producer's and administrator's a case needs.
type contractSide interface {
	ListShards(ctx context.Context) ([]stream.Shard, error)
	Iterator(ctx context.Context, shardID string, pos stream.Position) (string, error)
	GetRecords(ctx context.Context, iterator string, limit int32) (stream.Batch, error)
	// put puts records with these data into shardID and returns their
	// sequence numbers, in order.
	put(t *testing.T, shardID string, data ...string) []string
	// split splits shardID in the middle of its hash range and returns
	// the children.
	split(t *testing.T, shardID string) []string
	// merge merges two adjacent shards and returns the child.
	merge(t *testing.T, shardID, adjacentID string) string
	// reportsChildren: GetRecords at a shard's end lists its children.
	reportsChildren() bool
}

type memSide struct{ *stream.MemStream }

func (m memSide) put(t *testing.T, shardID string, data ...string) []string {
	t.Helper()
	recs := make([]stream.Record, len(data))
	for i, d := range data {
		recs[i] = stream.Record{PartitionKey: fmt.Sprintf("pk-%d", i), Data: []byte(d)}
	}
	out, err := m.Put(shardID, recs...)
	if err != nil {
		t.Fatal(err)
	}
	seqs := make([]string, len(out))
	for i, r := range out {
		seqs[i] = r.SequenceNumber
	}
	return seqs
}

func (m memSide) split(t *testing.T, shardID string) []string {
	t.Helper()
	kids, err := m.SplitShard(shardID, "")
	if err != nil {
		t.Fatal(err)
	}
	return kids
}

func (m memSide) merge(t *testing.T, a, b string) string {
	t.Helper()
	c, err := m.MergeShards(a, b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (memSide) reportsChildren() bool { return true }

type realSide struct {
	*stream.Client
	kc   *kinesis.Client
	name string
}

func (r *realSide) shard(t *testing.T, id string) stream.Shard {
	t.Helper()
	all, err := r.ListShards(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range all {
		if s.ID == id {
			return s
		}
	}
	t.Fatalf("no shard %s in %v", id, all)
	return stream.Shard{}
}

// put puts by explicit hash key: the shard's first.
func (r *realSide) put(t *testing.T, shardID string, data ...string) []string {
	t.Helper()
	hk := r.shard(t, shardID).StartingHashKey
	entries := make([]types.PutRecordsRequestEntry, len(data))
	for i, d := range data {
		entries[i] = types.PutRecordsRequestEntry{Data: []byte(d), PartitionKey: aws.String(fmt.Sprintf("pk-%d", i)), ExplicitHashKey: aws.String(hk)}
	}
	out, err := r.kc.PutRecords(context.Background(), &kinesis.PutRecordsInput{StreamName: aws.String(r.name), Records: entries})
	if err != nil {
		t.Fatal(err)
	}
	seqs := make([]string, len(out.Records))
	for i, rec := range out.Records {
		if got := aws.ToString(rec.ShardId); got != shardID {
			t.Fatalf("put for %s went to %q (%s)", shardID, got, aws.ToString(rec.ErrorMessage))
		}
		seqs[i] = aws.ToString(rec.SequenceNumber)
	}
	return seqs
}

func (r *realSide) split(t *testing.T, shardID string) []string {
	t.Helper()
	p := r.shard(t, shardID)
	lo, _ := new(big.Int).SetString(p.StartingHashKey, 10)
	hi, _ := new(big.Int).SetString(p.EndingHashKey, 10)
	mid := new(big.Int).Rsh(new(big.Int).Add(lo, hi), 1)
	if _, err := r.kc.SplitShard(context.Background(), &kinesis.SplitShardInput{
		StreamName: aws.String(r.name), ShardToSplit: aws.String(shardID), NewStartingHashKey: aws.String(mid.String()),
	}); err != nil {
		t.Fatal(err)
	}
	waitActive(t, r.kc, r.name)
	all, err := r.ListShards(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range stream.ChildrenFromList(all, shardID) {
		kids = append(kids, k.ID)
	}
	return kids
}

func (r *realSide) merge(t *testing.T, a, b string) string {
	t.Helper()
	if _, err := r.kc.MergeShards(context.Background(), &kinesis.MergeShardsInput{
		StreamName: aws.String(r.name), ShardToMerge: aws.String(a), AdjacentShardToMerge: aws.String(b),
	}); err != nil {
		t.Fatal(err)
	}
	waitActive(t, r.kc, r.name)
	all, err := r.ListShards(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	kids := stream.ChildrenFromList(all, a)
	if len(kids) != 1 {
		t.Fatalf("children of %s after merge: %+v", a, kids)
	}
	return kids[0].ID
}

func (*realSide) reportsChildren() bool { return false }

var streamContractCases = []struct {
	name   string
	shards int
	run    func(t *testing.T, s contractSide)
}{
	{"ListShards", 3, contractListShards},
	{"TrimHorizon", 3, contractTrimHorizon},
	{"SequenceNumbers", 2, contractSequenceNumbers},
	{"LimitAndContinuation", 1, contractLimit},
	{"LatestThenPut", 1, contractLatest},
	{"AtTimestamp", 1, contractAtTimestamp},
	{"UnknownShardAndBadIterator", 1, contractErrors},
	{"Split", 2, contractSplit},
	{"Merge", 2, contractMerge},
}

func shardName(i int) string { return fmt.Sprintf("shardId-%012d", i) }

func ctx10(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func iter(t *testing.T, s contractSide, shardID string, pos stream.Position) string {
	t.Helper()
	it, err := s.Iterator(ctx10(t), shardID, pos)
	if err != nil {
		t.Fatalf("Iterator %s %+v: %v", shardID, pos, err)
	}
	if it == "" {
		t.Fatalf("Iterator %s %+v: empty", shardID, pos)
	}
	return it
}

func get(t *testing.T, s contractSide, it string, limit int32) stream.Batch {
	t.Helper()
	b, err := s.GetRecords(ctx10(t), it, limit)
	if err != nil {
		t.Fatalf("GetRecords: %v", err)
	}
	return b
}

// readAll reads from pos until an empty batch or the shard's end; it
// returns the records, and the last batch.
func readAll(t *testing.T, s contractSide, shardID string, pos stream.Position, limit int32) ([]stream.Record, stream.Batch) {
	t.Helper()
	it := iter(t, s, shardID, pos)
	var recs []stream.Record
	for range 1000 {
		b := get(t, s, it, limit)
		if len(b.Records) > int(stream.ClampLimit(limit)) {
			t.Fatalf("GetRecords returned %d records, limit %d", len(b.Records), limit)
		}
		recs = append(recs, b.Records...)
		if len(b.Records) == 0 || b.ShardEnd() {
			return recs, b
		}
		it = b.NextIterator
	}
	t.Fatal("no end in 1000 reads")
	return nil, stream.Batch{}
}

func dataOf(recs []stream.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = string(r.Data)
	}
	return out
}

func seqsOf(recs []stream.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.SequenceNumber
	}
	return out
}

func numbered(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%02d", prefix, i)
	}
	return out
}

var (
	trimHorizon = stream.Position{Type: types.ShardIteratorTypeTrimHorizon}
	latest      = stream.Position{Type: types.ShardIteratorTypeLatest}
)

func at(seq string) stream.Position {
	return stream.Position{Type: types.ShardIteratorTypeAtSequenceNumber, SequenceNumber: seq}
}

func after(seq string) stream.Position {
	return stream.Position{Type: types.ShardIteratorTypeAfterSequenceNumber, SequenceNumber: seq}
}

func atTime(ts time.Time) stream.Position {
	return stream.Position{Type: types.ShardIteratorTypeAtTimestamp, Timestamp: ts}
}

// Three open shards splitting the hash key space evenly as CreateStream
// does, with starting sequence numbers and no parents.
func contractListShards(t *testing.T, s contractSide) {
	shards, err := s.ListShards(ctx10(t))
	if err != nil {
		t.Fatal(err)
	}
	space := new(big.Int).Lsh(big.NewInt(1), 128)
	width := new(big.Int).Div(space, big.NewInt(3))
	if len(shards) != 3 {
		t.Fatalf("shards %+v", shards)
	}
	for i, sh := range shards {
		lo := new(big.Int).Mul(width, big.NewInt(int64(i)))
		hi := new(big.Int).Mul(width, big.NewInt(int64(i+1)))
		if i == 2 {
			hi = space
		}
		hi.Sub(hi, big.NewInt(1))
		if sh.ID != shardName(i) || sh.Closed() || len(sh.Parents()) != 0 || !seqnum.Valid(sh.StartingSequenceNumber) ||
			sh.StartingHashKey != lo.String() || sh.EndingHashKey != hi.String() {
			t.Errorf("shard %d: %+v, want hash keys %s-%s", i, sh, lo, hi)
		}
	}
}

// TRIM_HORIZON reads a shard's records in order, with the sequence numbers
// Put returned (56 digits, increasing) and arrival times; caught up, the
// lag is 0 and the shard stays open. An empty shard reads empty.
func contractTrimHorizon(t *testing.T, s contractSide) {
	start := time.Now().Add(-time.Second)
	want := numbered("a", 10)
	seqs := s.put(t, shardName(0), want...)
	s.put(t, shardName(1), "other")
	got, last := readAll(t, s, shardName(0), trimHorizon, 100)
	if !slices.Equal(dataOf(got), want) || !slices.Equal(seqsOf(got), seqs) {
		t.Fatalf("read %v %v, want %v %v", dataOf(got), seqsOf(got), want, seqs)
	}
	for i, r := range got {
		if len(r.SequenceNumber) != 56 || !seqnum.Valid(r.SequenceNumber) || r.SubSequenceNumber != 0 || r.PartitionKey == "" ||
			r.ApproximateArrivalTimestamp.Before(start) || r.ApproximateArrivalTimestamp.After(time.Now().Add(time.Second)) {
			t.Errorf("record %d: %+v", i, r)
		}
		if i > 0 && seqnum.Compare(got[i-1].SequenceNumber, r.SequenceNumber) >= 0 {
			t.Errorf("sequence numbers not increasing: %s then %s", got[i-1].SequenceNumber, r.SequenceNumber)
		}
	}
	if last.ShardEnd() || last.MillisBehindLatest != 0 || len(last.Records) != 0 {
		t.Errorf("caught up: %+v", last)
	}
	if recs, b := readAll(t, s, shardName(2), trimHorizon, 100); len(recs) != 0 || b.ShardEnd() || b.MillisBehindLatest != 0 {
		t.Errorf("empty shard: %v %+v", dataOf(recs), b)
	}
}

// AT_ and AFTER_SEQUENCE_NUMBER start at and after a record; a sequence
// number of another shard is an invalid argument.
func contractSequenceNumbers(t *testing.T, s contractSide) {
	want := numbered("s", 8)
	seqs := s.put(t, shardName(0), want...)
	other := s.put(t, shardName(1), "x")
	for _, c := range []struct {
		pos  stream.Position
		want []string
	}{
		{at(seqs[3]), want[3:]},
		{after(seqs[3]), want[4:]},
		{at(seqs[0]), want},
		{at(seqs[7]), want[7:]},
		{after(seqs[7]), nil},
	} {
		got, _ := readAll(t, s, shardName(0), c.pos, 100)
		if !slices.Equal(dataOf(got), c.want) && (len(got) != 0 || len(c.want) != 0) {
			t.Errorf("%s %s: %v, want %v", c.pos.Type, c.pos.SequenceNumber, dataOf(got), c.want)
		}
	}
	if _, err := s.Iterator(ctx10(t), shardName(0), at(other[0])); !errors.Is(err, stream.ErrInvalidArgument) {
		t.Errorf("a sequence number of another shard: %v", err)
	}
	var iae *types.InvalidArgumentException
	if _, err := s.Iterator(ctx10(t), shardName(0), after(other[0])); !errors.As(err, &iae) {
		t.Errorf("a sequence number of another shard (AFTER): %v, want an InvalidArgumentException", err)
	}
}

// GetRecords returns at most limit records (0 counts as 1, more than
// 10000 as 10000) and continues where the last batch ended.
func contractLimit(t *testing.T, s contractSide) {
	want := numbered("l", 10)
	s.put(t, shardName(0), want...)
	it := iter(t, s, shardName(0), trimHorizon)
	var got []string
	var sizes []int
	for len(got) < len(want) {
		b := get(t, s, it, 3)
		if len(b.Records) == 0 || b.ShardEnd() {
			t.Fatalf("batch %+v after %v", b, got)
		}
		got, sizes = append(got, dataOf(b.Records)...), append(sizes, len(b.Records))
		it = b.NextIterator
	}
	if !slices.Equal(got, want) || !slices.Equal(sizes, []int{3, 3, 3, 1}) {
		t.Errorf("read %v in batches of %v", got, sizes)
	}
	if b := get(t, s, it, 3); len(b.Records) != 0 || b.ShardEnd() || b.MillisBehindLatest != 0 {
		t.Errorf("after the last record: %+v", b)
	}
	if b := get(t, s, iter(t, s, shardName(0), trimHorizon), 0); len(b.Records) != 1 {
		t.Errorf("limit 0: %d records", len(b.Records))
	}
	if b := get(t, s, iter(t, s, shardName(0), trimHorizon), 20000); len(b.Records) != 10 {
		t.Errorf("limit 20000: %d records", len(b.Records))
	}
}

// LATEST reads only what is put after the iterator; an iterator can be
// used again (it is a position).
func contractLatest(t *testing.T, s contractSide) {
	s.put(t, shardName(0), numbered("old", 5)...)
	it := iter(t, s, shardName(0), latest)
	empty := get(t, s, it, 100)
	if len(empty.Records) != 0 || empty.ShardEnd() {
		t.Fatalf("LATEST before a put: %+v", empty)
	}
	want := numbered("new", 3)
	s.put(t, shardName(0), want...)
	if b := get(t, s, empty.NextIterator, 100); !slices.Equal(dataOf(b.Records), want) {
		t.Errorf("after the put, by the next iterator: %v, want %v", dataOf(b.Records), want)
	}
	if b := get(t, s, it, 100); !slices.Equal(dataOf(b.Records), want) {
		t.Errorf("after the put, by the first iterator again: %v, want %v", dataOf(b.Records), want)
	}
}

// AT_TIMESTAMP starts at the first record that arrived at or after it; a
// timestamp in the future is an invalid argument.
func contractAtTimestamp(t *testing.T, s contractSide) {
	before := numbered("before", 4)
	s.put(t, shardName(0), before...)
	// Keep the boundary a few milliseconds from both puts: arrival times
	// are in milliseconds.
	<-time.After(5 * time.Millisecond)
	boundary := time.Now()
	<-time.After(5 * time.Millisecond)
	want := numbered("after", 4)
	s.put(t, shardName(0), want...)
	if got, _ := readAll(t, s, shardName(0), atTime(boundary), 100); !slices.Equal(dataOf(got), want) {
		t.Errorf("AT_TIMESTAMP boundary: %v, want %v", dataOf(got), want)
	}
	if got, _ := readAll(t, s, shardName(0), atTime(boundary.Add(-time.Hour)), 100); !slices.Equal(dataOf(got), append(before, want...)) {
		t.Errorf("AT_TIMESTAMP an hour before: %v", dataOf(got))
	}
	if _, err := s.Iterator(ctx10(t), shardName(0), atTime(time.Now().Add(time.Hour))); !errors.Is(err, stream.ErrInvalidArgument) {
		t.Errorf("AT_TIMESTAMP in the future: %v", err)
	}
}

// A shard that does not exist is ErrShardNotFound (a
// ResourceNotFoundException); an iterator that is not one is
// ErrInvalidArgument.
func contractErrors(t *testing.T, s contractSide) {
	var rnf *types.ResourceNotFoundException
	for _, pos := range []stream.Position{trimHorizon, latest} {
		_, err := s.Iterator(ctx10(t), shardName(99), pos)
		if !errors.Is(err, stream.ErrShardNotFound) || !errors.As(err, &rnf) {
			t.Errorf("Iterator %s on a missing shard: %v", pos.Type, err)
		}
	}
	if _, err := s.GetRecords(ctx10(t), "AAAAAAAAAAGarbage", 10); !errors.Is(err, stream.ErrInvalidArgument) {
		t.Errorf("GetRecords with a garbage iterator: %v", err)
	}
}

// A split closes the parent (an ending sequence number) and lists two open
// children with their parent and the halves of its hash range. The parent
// reads to its end: its records (the batch with the last ones still has a
// next iterator), then an empty batch with none and, where the server
// reports them, the children. New records go to the children, numbered
// after the parent's.
func contractSplit(t *testing.T, s contractSide) {
	want := numbered("p", 4)
	seqs := s.put(t, shardName(0), want...)
	before, err := s.ListShards(ctx10(t))
	if err != nil {
		t.Fatal(err)
	}
	parent := before[0]
	kids := s.split(t, parent.ID)
	all, err := s.ListShards(ctx10(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 4 || len(kids) != 2 {
		t.Fatalf("after the split: %+v, children %v", all, kids)
	}
	p := all[0]
	if !p.Closed() || !seqnum.Valid(p.EndingSequenceNumber) || seqnum.Compare(p.EndingSequenceNumber, seqs[3]) <= 0 || all[1].Closed() {
		t.Errorf("parent %+v (last record %s), other shard %+v", p, seqs[3], all[1])
	}
	lists := stream.ChildrenFromList(all, parent.ID)
	if len(lists) != 2 || lists[0].ID != kids[0] || lists[1].ID != kids[1] {
		t.Fatalf("children %+v, want %v", lists, kids)
	}
	mid := lists[1].StartingHashKey
	for i, k := range lists {
		if k.Closed() || k.ParentShardID != parent.ID || k.AdjacentParentShardID != "" || !seqnum.Valid(k.StartingSequenceNumber) {
			t.Errorf("child %d: %+v", i, k)
		}
	}
	lo, _ := new(big.Int).SetString(mid, 10)
	if lists[0].StartingHashKey != parent.StartingHashKey || lists[0].EndingHashKey != new(big.Int).Sub(lo, big.NewInt(1)).String() || lists[1].EndingHashKey != parent.EndingHashKey {
		t.Errorf("children's hash ranges %+v / %+v, parent %+v", lists[0], lists[1], parent)
	}

	it := iter(t, s, parent.ID, trimHorizon)
	b := get(t, s, it, 100)
	if !slices.Equal(dataOf(b.Records), want) || b.ShardEnd() {
		t.Fatalf("closed parent, first read: %v end=%v", dataOf(b.Records), b.ShardEnd())
	}
	end := get(t, s, b.NextIterator, 100)
	checkEnd(t, s, end, kids, parent.ID)
	checkEnd(t, s, get(t, s, iter(t, s, parent.ID, after(seqs[3])), 100), kids, parent.ID)
	checkEnd(t, s, get(t, s, iter(t, s, parent.ID, latest), 100), kids, parent.ID)

	kseqs := s.put(t, kids[0], "k")
	if seqnum.Compare(kseqs[0], seqs[3]) <= 0 {
		t.Errorf("child's record %s not after the parent's %s", kseqs[0], seqs[3])
	}
	if got, _ := readAll(t, s, kids[0], trimHorizon, 100); !slices.Equal(dataOf(got), []string{"k"}) {
		t.Errorf("child read %v", dataOf(got))
	}
}

// checkEnd checks the batch that ends a closed shard.
func checkEnd(t *testing.T, s contractSide, b stream.Batch, kids []string, parents ...string) {
	t.Helper()
	if len(b.Records) != 0 || !b.ShardEnd() {
		t.Fatalf("at the end of a closed shard: %+v", b)
	}
	if !s.reportsChildren() {
		if b.ChildShards != nil {
			t.Errorf("ChildShards %+v from a server said not to report them", b.ChildShards)
		}
		return
	}
	var ids []string
	for _, c := range b.ChildShards {
		ids = append(ids, c.ID)
		got := c.Parents()
		slices.Sort(got)
		if !slices.Equal(got, parents) || c.StartingHashKey == "" || c.EndingHashKey == "" {
			t.Errorf("ChildShard %+v, want parents %v", c, parents)
		}
	}
	if !slices.Equal(ids, kids) {
		t.Errorf("ChildShards %v, want %v", ids, kids)
	}
}

// A merge closes both parents and lists one child with both (parent and
// adjacent parent) and their joined hash range; each parent reads to its
// end.
func contractMerge(t *testing.T, s contractSide) {
	a := s.put(t, shardName(0), "a0", "a1")
	s.put(t, shardName(1), "b0")
	before, err := s.ListShards(ctx10(t))
	if err != nil {
		t.Fatal(err)
	}
	kid := s.merge(t, shardName(0), shardName(1))
	all, err := s.ListShards(ctx10(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 || !all[0].Closed() || !all[1].Closed() || all[2].ID != kid || all[2].Closed() {
		t.Fatalf("after the merge: %+v", all)
	}
	c := all[2]
	if c.ParentShardID != shardName(0) || c.AdjacentParentShardID != shardName(1) ||
		c.StartingHashKey != before[0].StartingHashKey || c.EndingHashKey != before[1].EndingHashKey {
		t.Errorf("child %+v", c)
	}
	for _, p := range []string{shardName(0), shardName(1)} {
		if k := stream.ChildrenFromList(all, p); len(k) != 1 || k[0].ID != kid {
			t.Errorf("children of %s: %+v", p, k)
		}
		_, last := readAll(t, s, p, trimHorizon, 100)
		checkEnd(t, s, last, []string{kid}, shardName(0), shardName(1))
	}
	if got, _ := readAll(t, s, shardName(0), at(a[1]), 100); !slices.Equal(dataOf(got), []string{"a1"}) {
		t.Errorf("closed parent AT its last record: %v", dataOf(got))
	}
}

// ---- MemStream alone ----------------------------------------------------------

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func putData(t *testing.T, s *stream.MemStream, shardID string, data ...string) []stream.Record {
	t.Helper()
	recs := make([]stream.Record, len(data))
	for i, d := range data {
		recs[i] = stream.Record{PartitionKey: "pk", Data: []byte(d)}
	}
	out, err := s.Put(shardID, recs...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Iterators expire IteratorTTL after they were issued (a NextIterator is a
// new one), or at once on ExpireIterators; the error is Kinesis's.
func TestMemStreamIteratorExpiry(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	s := stream.NewMemStream("s", 1)
	s.SetClock(clock.Now)
	putData(t, s, shardName(0), "a", "b")
	it, err := s.Iterator(ctx, shardName(0), trimHorizon)
	if err != nil {
		t.Fatal(err)
	}
	clock.Add(4 * time.Minute)
	b, err := s.GetRecords(ctx, it, 1)
	if err != nil || len(b.Records) != 1 {
		t.Fatalf("at 4 minutes: %+v %v", b, err)
	}
	clock.Add(2 * time.Minute)
	var eie *types.ExpiredIteratorException
	if _, err := s.GetRecords(ctx, it, 1); !errors.Is(err, stream.ErrExpiredIterator) || !errors.As(err, &eie) {
		t.Fatalf("at 6 minutes: %v", err)
	}
	if b, err = s.GetRecords(ctx, b.NextIterator, 1); err != nil || string(b.Records[0].Data) != "b" {
		t.Fatalf("the next iterator, issued at 4 minutes: %+v %v", b, err)
	}

	s.SetIteratorTTL(time.Second)
	clock.Add(2 * time.Second)
	if _, err := s.GetRecords(ctx, b.NextIterator, 1); !errors.Is(err, stream.ErrExpiredIterator) {
		t.Fatalf("past a TTL of 1s: %v", err)
	}

	s.SetIteratorTTL(stream.IteratorTTL)
	it, _ = s.Iterator(ctx, shardName(0), trimHorizon)
	s.ExpireIterators()
	if _, err := s.GetRecords(ctx, it, 1); !errors.Is(err, stream.ErrExpiredIterator) {
		t.Fatalf("after ExpireIterators: %v", err)
	}
	it, _ = s.Iterator(ctx, shardName(0), trimHorizon)
	if b, err := s.GetRecords(ctx, it, 10); err != nil || len(b.Records) != 2 {
		t.Fatalf("an iterator issued after ExpireIterators: %+v %v", b, err)
	}
}

// The fault hook sees every call with its operation and shard; its errors
// come back classified, and a hang ends with the call's context.
func TestMemStreamFaults(t *testing.T) {
	ctx := context.Background()
	s := stream.NewMemStream("s", 2)
	putData(t, s, shardName(1), "a")
	it, _ := s.Iterator(ctx, shardName(1), trimHorizon)
	type call struct{ op, shard string }
	var mu sync.Mutex
	var seen []call
	s.SetFault(func(ctx context.Context, op, shardID string) error {
		mu.Lock()
		seen = append(seen, call{op, shardID})
		mu.Unlock()
		if op == stream.OpGetRecords {
			return stream.Throttle()
		}
		return nil
	})
	var pte *types.ProvisionedThroughputExceededException
	if _, err := s.GetRecords(ctx, it, 10); !errors.Is(err, stream.ErrThrottled) || !errors.As(err, &pte) {
		t.Fatalf("throttled GetRecords: %v", err)
	}
	if _, err := s.Iterator(ctx, shardName(0), latest); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ListShards(ctx); err != nil {
		t.Fatal(err)
	}
	want := []call{{stream.OpGetRecords, shardName(1)}, {stream.OpGetShardIterator, shardName(0)}, {stream.OpListShards, ""}}
	if !slices.Equal(seen, want) {
		t.Errorf("hook saw %v, want %v", seen, want)
	}

	s.SetFault(func(ctx context.Context, op, _ string) error {
		if op == stream.OpGetShardIterator {
			return stream.Hang(ctx)
		}
		return nil
	})
	hctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := s.Iterator(hctx, shardName(0), trimHorizon); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hung Iterator: %v", err)
	}
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Errorf("hung Iterator returned after %v", d)
	}
	s.SetFault(nil)
	if b, err := s.GetRecords(ctx, it, 10); err != nil || len(b.Records) != 1 {
		t.Fatalf("after the fault: %+v %v", b, err)
	}
	if n := s.Calls(stream.OpGetRecords); n != 2 {
		t.Errorf("GetRecords calls %d, want 2", n)
	}
	cctx, cancel2 := context.WithCancel(ctx)
	cancel2()
	if _, err := s.ListShards(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("ListShards with an ended context: %v", err)
	}
}

// Behind the tip, MillisBehindLatest is the age of the batch's last
// record; at the tip, 0.
func TestMemStreamMillisBehindLatest(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	s := stream.NewMemStream("s", 1)
	s.SetClock(clock.Now)
	putData(t, s, shardName(0), "a")
	clock.Add(3 * time.Second)
	putData(t, s, shardName(0), "b")
	clock.Add(2 * time.Second)
	it, _ := s.Iterator(ctx, shardName(0), trimHorizon)
	b, err := s.GetRecords(ctx, it, 1)
	if err != nil || b.MillisBehindLatest != 5000 {
		t.Fatalf("behind: %+v %v", b, err)
	}
	if b, err = s.GetRecords(ctx, b.NextIterator, 1); err != nil || b.MillisBehindLatest != 0 || string(b.Records[0].Data) != "b" {
		t.Fatalf("at the tip: %+v %v", b, err)
	}
	if got := b.Records[0].ApproximateArrivalTimestamp; !got.Equal(time.Unix(1_700_000_003, 0)) {
		t.Errorf("arrival %v", got)
	}
}

// Puts and resharding are refused as Kinesis refuses them; records are
// copied in and out.
func TestMemStreamRefusals(t *testing.T) {
	ctx := context.Background()
	s := stream.NewMemStream("s", 3)
	if _, err := s.Put(shardName(7), stream.Record{Data: []byte("x")}); !errors.Is(err, stream.ErrShardNotFound) {
		t.Errorf("Put to a missing shard: %v", err)
	}
	if _, err := s.SplitShard(shardName(0), "1"); !errors.Is(err, stream.ErrInvalidArgument) {
		t.Errorf("split at the shard's start: %v", err)
	}
	if _, err := s.MergeShards(shardName(0), shardName(2)); !errors.Is(err, stream.ErrInvalidArgument) {
		t.Errorf("merging shards that are not adjacent: %v", err)
	}
	if _, err := s.MergeShards(shardName(1), shardName(0)); !errors.Is(err, stream.ErrInvalidArgument) {
		t.Errorf("merging in the wrong order: %v", err)
	}
	if _, err := s.SplitShard(shardName(0), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(shardName(0), stream.Record{Data: []byte("x")}); !errors.Is(err, stream.ErrInvalidArgument) {
		t.Errorf("Put to a closed shard: %v", err)
	}
	if _, err := s.SplitShard(shardName(0), ""); !errors.Is(err, stream.ErrInvalidArgument) {
		t.Errorf("split of a closed shard: %v", err)
	}
	if _, err := s.SplitShard(shardName(9), ""); !errors.Is(err, stream.ErrShardNotFound) {
		t.Errorf("split of a missing shard: %v", err)
	}

	data := []byte("abc")
	out, _ := s.Put(shardName(1), stream.Record{Data: data})
	data[0], out[0].Data[1] = 'X', 'Y'
	it, _ := s.Iterator(ctx, shardName(1), trimHorizon)
	b, _ := s.GetRecords(ctx, it, 10)
	b.Records[0].Data[2] = 'Z'
	b, _ = s.GetRecords(ctx, it, 10)
	if string(b.Records[0].Data) != "abc" {
		t.Errorf("stored data changed through a caller's slice: %q", b.Records[0].Data)
	}
	if _, err := stream.NewMemStream("other", 3).GetRecords(ctx, it, 10); !errors.Is(err, stream.ErrInvalidArgument) {
		t.Errorf("another stream's iterator: %v", err)
	}
	for _, pos := range []stream.Position{{Type: types.ShardIteratorTypeAtTimestamp}, {Type: types.ShardIteratorTypeAtSequenceNumber}, {Type: "NOWHERE"}} {
		if _, err := s.Iterator(ctx, shardName(1), pos); err == nil || errors.Is(err, stream.ErrInvalidArgument) {
			t.Errorf("position %+v: %v, want Client's own refusal", pos, err)
		}
	}
}

// AT_TIMESTAMP after the last record reads what is put next (Kinesis
// documents this; kinesalite never answers such a request, so the case is
// not in the contract).
func TestMemStreamAtTimestampAfterTheTip(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	s := stream.NewMemStream("s", 1)
	s.SetClock(clock.Now)
	putData(t, s, shardName(0), "old")
	clock.Add(time.Second)
	it, err := s.Iterator(ctx, shardName(0), atTime(clock.Now()))
	if err != nil {
		t.Fatal(err)
	}
	putData(t, s, shardName(0), "new")
	if b, err := s.GetRecords(ctx, it, 10); err != nil || !slices.Equal(dataOf(b.Records), []string{"new"}) {
		t.Fatalf("%+v %v", b, err)
	}
}

// Concurrent producers and consumers (for -race): every record read once,
// in order per shard.
func TestMemStreamConcurrent(t *testing.T) {
	s := stream.NewMemStream("s", 2)
	var wg sync.WaitGroup
	for sh := range 2 {
		wg.Go(func() {
			for i := range 200 {
				putData(t, s, shardName(sh), fmt.Sprint(i))
			}
		})
	}
	got := make([][]string, 2)
	for sh := range 2 {
		wg.Go(func() {
			ctx := context.Background()
			it, err := s.Iterator(ctx, shardName(sh), trimHorizon)
			if err != nil {
				t.Error(err)
				return
			}
			deadline := time.Now().Add(5 * time.Second)
			for len(got[sh]) < 200 && time.Now().Before(deadline) {
				b, err := s.GetRecords(ctx, it, 7)
				if err != nil {
					t.Error(err)
					return
				}
				got[sh] = append(got[sh], dataOf(b.Records)...)
				it = b.NextIterator
			}
		})
	}
	wg.Wait()
	for sh := range 2 {
		if !slices.Equal(got[sh], numberedPlain(200)) {
			t.Errorf("shard %d read %d records: %v", sh, len(got[sh]), got[sh])
		}
	}
}

func numberedPlain(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprint(i)
	}
	return out
}
