package lease

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/kinactor/kinactor/internal/backoff"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// TestDynamoIntegration runs the store against real DynamoDB wire-protocol
// servers: AWS's DynamoDB Local and dynalite. Each subtest uses its own table.
func TestDynamoIntegration(t *testing.T) {
	for _, kind := range []localaws.Kind{localaws.DynamoDBLocal, localaws.Dynalite} {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			env := localaws.StartT(t, "", kind)
			client := env.DynamoDBClient()
			var tables atomic.Int64
			newStore := func(t *testing.T, opts ...Option) *DynamoStore {
				t.Helper()
				name := fmt.Sprintf("leases-%d", tables.Add(1))
				s := NewDynamoStore(client, name, opts...)
				if err := s.EnsureTable(context.Background()); err != nil {
					t.Fatalf("EnsureTable: %v", err)
				}
				return s
			}
			for _, tc := range integrationCases {
				t.Run(tc.name, func(t *testing.T) {
					tc.run(t, client, newStore)
				})
			}
		})
	}
}

type newStoreFunc func(t *testing.T, opts ...Option) *DynamoStore

var integrationCases = []struct {
	name string
	run  func(t *testing.T, client *dynamodb.Client, newStore newStoreFunc)
}{
	{"EnsureTableTwice", testEnsureTableTwice},
	{"CreateIfAbsent", testCreateIfAbsent},
	{"RacingTake", testRacingTake},
	{"StaleCheckpointRefused", testStaleCheckpointRefused},
	{"ReleaseThenTake", testReleaseThenTake},
	{"CheckpointCountsAndResets", testCheckpointCountsAndResets},
	{"ShardEndWithChildren", testShardEndWithChildren},
	{"JavaKCLRow", testJavaKCLRow},
	{"JavaKCLMultiStreamRow", testJavaKCLMultiStreamRow},
	{"CounterExpiry", testCounterExpiry},
	{"DeleteAndList", testDeleteAndList},
	{"ConditionFailureReturnsOld", testConditionFailureReturnsOld},
	{"LostResponseThenRetry", testLostResponseThenRetry},
	{"ReadsCounted", testReadsCounted},
}

// testReadsCounted: the read hook sees one call per GetItem and per Scan
// page, with the rows each returned.
func testReadsCounted(t *testing.T, _ *dynamodb.Client, newStore newStoreFunc) {
	type read struct {
		op    string
		items int
	}
	var reads []read
	s := newStore(t, WithOnRead(func(op string, items int) { reads = append(reads, read{op, items}) }))
	s.scanLimit = 3 // pages of 3 rows
	for i := range 7 {
		if err := s.Create(bg, Lease{Key: fmt.Sprintf("shardId-%012d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	reads = nil
	ls, err := s.List(bg)
	if err != nil || len(ls) != 7 {
		t.Fatalf("List: %d rows, %v", len(ls), err)
	}
	pages, items := 0, 0
	for _, r := range reads {
		if r.op != "scan" {
			t.Fatalf("List made a %q read", r.op)
		}
		pages++
		items += r.items
	}
	if pages < 3 || items != 7 {
		t.Fatalf("List of 7 rows in pages of 3: %d scan reads returning %d rows (%v)", pages, items, reads)
	}
	reads = nil
	if _, err := s.Get(bg, shard0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(bg, "shardId-999999999999"); err == nil {
		t.Fatal("Get of a missing row found it")
	}
	if len(reads) != 2 || reads[0] != (read{"get", 1}) || reads[1] != (read{"get", 0}) {
		t.Fatalf("two Gets (one row, one missing): reads %v", reads)
	}
}

var bg = context.Background()

const shard0 = "shardId-000000000000"

func mustCreate(t *testing.T, s *DynamoStore, l Lease) {
	t.Helper()
	if err := s.Create(bg, l); err != nil {
		t.Fatalf("Create %s: %v", l.Key, err)
	}
}

func mustGet(t *testing.T, s *DynamoStore, key string) Lease {
	t.Helper()
	l, err := s.Get(bg, key)
	if err != nil {
		t.Fatalf("Get %s: %v", key, err)
	}
	return l
}

func mustTake(t *testing.T, s *DynamoStore, seen Lease, owner string) Lease {
	t.Helper()
	l, err := s.Take(bg, seen, owner, TakeOptions{})
	if err != nil {
		t.Fatalf("Take %s by %s: %v", seen.Key, owner, err)
	}
	return l
}

func testEnsureTableTwice(t *testing.T, _ *dynamodb.Client, newStore newStoreFunc) {
	s := newStore(t)
	if err := s.EnsureTable(bg); err != nil {
		t.Fatalf("second EnsureTable: %v", err)
	}
	// A second store on the same table, as another node would have.
	if err := NewDynamoStore(s.api, s.Table()).EnsureTable(bg); err != nil {
		t.Fatalf("EnsureTable from another store: %v", err)
	}
}

func testCreateIfAbsent(t *testing.T, _ *dynamodb.Client, newStore newStoreFunc) {
	var w writeLog
	s := newStore(t, WithOnWrite(w.hook))
	l := Lease{
		Key:             shard0,
		Owner:           "ignored",
		Counter:         99,
		Checkpoint:      Checkpoint{SequenceNumber: CheckpointTrimHorizon},
		StartingHashKey: "0",
		EndingHashKey:   "340282366920938463463374607431768211455",
	}
	mustCreate(t, s, l)
	err := s.Create(bg, Lease{Key: shard0, Checkpoint: Checkpoint{SequenceNumber: CheckpointLatest}})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second Create: %v, want ErrExists", err)
	}
	got := mustGet(t, s, shard0)
	want := Lease{Key: shard0, Checkpoint: l.Checkpoint, StartingHashKey: l.StartingHashKey, EndingHashKey: l.EndingHashKey}
	if !equalLease(got, want) {
		t.Fatalf("row = %+v, want %+v", got, want)
	}
	if ops := w.get(); !slices.Equal(ops, []string{"create:ok", "create:fail"}) {
		t.Fatalf("OnWrite saw %v", ops)
	}
	if _, err := s.Get(bg, "shardId-000000000404"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a missing row: %v, want ErrNotFound", err)
	}
}

func testRacingTake(t *testing.T, _ *dynamodb.Client, newStore newStoreFunc) {
	s := newStore(t)
	mustCreate(t, s, Lease{Key: shard0, Checkpoint: Checkpoint{SequenceNumber: CheckpointTrimHorizon}})
	for round := range 5 {
		seen := mustGet(t, s, shard0)
		owners := []string{fmt.Sprintf("A%d", round), fmt.Sprintf("B%d", round)}
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			res   = make([]Lease, 2)
			errs  = make([]error, 2)
		)
		for i, o := range owners {
			wg.Go(func() {
				<-start
				res[i], errs[i] = s.Take(bg, seen, o, TakeOptions{})
			})
		}
		close(start)
		wg.Wait()
		winners := 0
		for i := range owners {
			switch {
			case errs[i] == nil:
				winners++
				if res[i].Owner != owners[i] || res[i].Counter != seen.Counter+1 {
					t.Fatalf("winner's lease = %+v", res[i])
				}
			case !errors.Is(errs[i], ErrLeaseLost):
				t.Fatalf("loser's error = %v, want ErrLeaseLost", errs[i])
			}
		}
		if winners != 1 {
			t.Fatalf("round %d: %d winners (errors %v)", round, winners, errs)
		}
		row := mustGet(t, s, shard0)
		if row.Counter != seen.Counter+1 || (row.Owner != owners[0] && row.Owner != owners[1]) {
			t.Fatalf("row after race = %+v", row)
		}
	}
}

func testStaleCheckpointRefused(t *testing.T, _ *dynamodb.Client, newStore newStoreFunc) {
	s := newStore(t)
	mustCreate(t, s, Lease{Key: shard0, Checkpoint: Checkpoint{SequenceNumber: CheckpointTrimHorizon}})
	a := mustTake(t, s, mustGet(t, s, shard0), "A")
	a, err := s.Checkpoint(bg, a, Checkpoint{SequenceNumber: "100"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// B takes it from A (gossip said so, or A looked expired).
	b := mustTake(t, s, mustGet(t, s, shard0), "B")
	if b.OwnerSwitchesSinceCheckpoint != 1 {
		t.Fatalf("ownerSwitches after take from A = %d, want 1", b.OwnerSwitchesSinceCheckpoint)
	}
	// A, not knowing, checkpoints further and renews: both refused.
	if _, err := s.Checkpoint(bg, a, Checkpoint{SequenceNumber: "200"}, nil); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("stale checkpoint: %v, want ErrLeaseLost", err)
	}
	if _, err := s.Renew(bg, a); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("stale renew: %v, want ErrLeaseLost", err)
	}
	if err := s.Release(bg, a); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("stale release: %v, want ErrLeaseLost", err)
	}
	row := mustGet(t, s, shard0)
	if row.Checkpoint.SequenceNumber != "100" || row.Owner != "B" || row.Counter != b.Counter {
		t.Fatalf("row after stale writes = %+v", row)
	}
	// Same owner name but an old counter is refused too.
	if _, err := s.Renew(bg, Lease{Key: shard0, Owner: "B", Counter: b.Counter - 1}); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("renew at an old counter: %v, want ErrLeaseLost", err)
	}
}

func testReleaseThenTake(t *testing.T, _ *dynamodb.Client, newStore newStoreFunc) {
	s := newStore(t)
	mustCreate(t, s, Lease{Key: shard0, Checkpoint: Checkpoint{SequenceNumber: CheckpointLatest}})
	a := mustTake(t, s, mustGet(t, s, shard0), "A")
	a, err := s.Renew(bg, a)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Release(bg, a); err != nil {
		t.Fatalf("Release: %v", err)
	}
	seen := mustGet(t, s, shard0)
	if seen.Owner != "" || seen.Counter != a.Counter+1 {
		t.Fatalf("row after release = %+v", seen)
	}
	// Taking with the stale view (owner A) fails; with the fresh one it works.
	if _, err := s.Take(bg, a, "B", TakeOptions{}); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("take from a stale view: %v, want ErrLeaseLost", err)
	}
	b := mustTake(t, s, seen, "B")
	if b.Owner != "B" || b.Counter != seen.Counter+1 || b.OwnerSwitchesSinceCheckpoint != 2 {
		t.Fatalf("taken = %+v", b)
	}
}

func testCheckpointCountsAndResets(t *testing.T, _ *dynamodb.Client, newStore newStoreFunc) {
	s := newStore(t)
	mustCreate(t, s, Lease{Key: shard0, Checkpoint: Checkpoint{SequenceNumber: CheckpointTrimHorizon}})
	l := mustTake(t, s, mustGet(t, s, shard0), "A")
	l = mustTake(t, s, l, "B")
	l = mustTake(t, s, l, "B") // same owner again: no switch
	if l.OwnerSwitchesSinceCheckpoint != 2 || l.Counter != 3 {
		t.Fatalf("before checkpoint: %+v", l)
	}
	cp := Checkpoint{SequenceNumber: "49590338271490256608559692538361571095921575989136588898", SubSequenceNumber: 7}
	got, err := s.Checkpoint(bg, l, cp, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Lease{Key: shard0, Owner: "B", Counter: 4, Checkpoint: cp}
	if !equalLease(got, want) {
		t.Fatalf("Checkpoint returned %+v, want %+v", got, want)
	}
	if row := mustGet(t, s, shard0); !equalLease(row, want) {
		t.Fatalf("row = %+v, want %+v", row, want)
	}
}

func testShardEndWithChildren(t *testing.T, _ *dynamodb.Client, newStore newStoreFunc) {
	s := newStore(t)
	parents := []string{"shardId-000000000001", "shardId-000000000000"}
	mustCreate(t, s, Lease{Key: "shardId-000000000002", ParentShardIDs: parents, Checkpoint: Checkpoint{SequenceNumber: CheckpointTrimHorizon}})
	l := mustTake(t, s, mustGet(t, s, "shardId-000000000002"), "A")
	children := []string{"shardId-000000000004", "shardId-000000000003"}
	got, err := s.Checkpoint(bg, l, Checkpoint{SequenceNumber: CheckpointShardEnd}, children)
	if err != nil {
		t.Fatal(err)
	}
	row := mustGet(t, s, "shardId-000000000002")
	for _, r := range []Lease{got, row} {
		if !r.Checkpoint.IsShardEnd() {
			t.Fatalf("checkpoint = %+v", r.Checkpoint)
		}
		if !slices.Equal(r.ChildShardIDs, []string{"shardId-000000000003", "shardId-000000000004"}) {
			t.Fatalf("children = %v", r.ChildShardIDs)
		}
		if !slices.Equal(r.ParentShardIDs, []string{"shardId-000000000000", "shardId-000000000001"}) {
			t.Fatalf("parents = %v", r.ParentShardIDs)
		}
	}
	if err := s.Release(bg, got); err != nil {
		t.Fatal(err)
	}
}

// testJavaKCLRow writes a row exactly as the Java KCL 2.x does and checks the
// store reads it and takes it over without losing its attributes.
func testJavaKCLRow(t *testing.T, client *dynamodb.Client, newStore newStoreFunc) {
	s := newStore(t)
	const key = "shardId-000000000005"
	seq := "49590338271490256608559692540925702759324208523137515618"
	_, err := client.PutItem(bg, &dynamodb.PutItemInput{
		TableName: aws.String(s.Table()),
		Item: map[string]types.AttributeValue{
			"leaseKey":                     &types.AttributeValueMemberS{Value: key},
			"leaseOwner":                   &types.AttributeValueMemberS{Value: "java-worker-1"},
			"leaseCounter":                 &types.AttributeValueMemberN{Value: "1234"},
			"checkpoint":                   &types.AttributeValueMemberS{Value: seq},
			"checkpointSubSequenceNumber":  &types.AttributeValueMemberN{Value: "0"},
			"ownerSwitchesSinceCheckpoint": &types.AttributeValueMemberN{Value: "3"},
			"parentShardId":                &types.AttributeValueMemberSS{Value: []string{"shardId-000000000001"}},
			"throughputKBps":               &types.AttributeValueMemberN{Value: "12.5"}, // unknown to us
		},
	})
	if err != nil {
		t.Fatalf("raw PutItem: %v", err)
	}
	seen := mustGet(t, s, key)
	want := Lease{Key: key, Owner: "java-worker-1", Counter: 1234, Checkpoint: Checkpoint{SequenceNumber: seq},
		OwnerSwitchesSinceCheckpoint: 3, ParentShardIDs: []string{"shardId-000000000001"}}
	if !equalLease(seen, want) {
		t.Fatalf("read %+v, want %+v", seen, want)
	}
	all, err := s.List(bg)
	if err != nil || len(all) != 1 || !equalLease(all[0], want) {
		t.Fatalf("List = %+v, %v", all, err)
	}
	got := mustTake(t, s, seen, "go-node-1")
	want.Owner, want.Counter, want.OwnerSwitchesSinceCheckpoint = "go-node-1", 1235, 4
	if !equalLease(got, want) {
		t.Fatalf("taken %+v, want %+v", got, want)
	}
	out, err := client.GetItem(bg, &dynamodb.GetItemInput{TableName: aws.String(s.Table()), Key: keyOf(key), ConsistentRead: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := out.Item["leaseCounter"].(*types.AttributeValueMemberN); !ok || n.Value != "1235" {
		t.Fatalf("leaseCounter stored as %#v, want N 1235", out.Item["leaseCounter"])
	}
	if _, ok := out.Item["throughputKBps"]; !ok {
		t.Fatal("take dropped an attribute the Java KCL wrote")
	}
}

// testJavaKCLMultiStreamRow: a row written as the Java KCL's multi-stream
// mode writes it (its parents as shard ids, the stream and shard apart) is
// read with lease keys for parents and children; rows kinactor creates
// and checkpoints carry the same attributes.
func testJavaKCLMultiStreamRow(t *testing.T, client *dynamodb.Client, newStore newStoreFunc) {
	s := newStore(t)
	const sid = "123456789012:orders:1700000000"
	key := sid + ":shardId-000000000005"
	_, err := client.PutItem(bg, &dynamodb.PutItemInput{
		TableName: aws.String(s.Table()),
		Item: map[string]types.AttributeValue{
			"leaseKey":                     &types.AttributeValueMemberS{Value: key},
			"leaseOwner":                   &types.AttributeValueMemberS{Value: "java-worker-1"},
			"leaseCounter":                 &types.AttributeValueMemberN{Value: "7"},
			"checkpoint":                   &types.AttributeValueMemberS{Value: "TRIM_HORIZON"},
			"checkpointSubSequenceNumber":  &types.AttributeValueMemberN{Value: "0"},
			"ownerSwitchesSinceCheckpoint": &types.AttributeValueMemberN{Value: "0"},
			"parentShardId":                &types.AttributeValueMemberSS{Value: []string{"shardId-000000000001"}},
			"streamName":                   &types.AttributeValueMemberS{Value: sid},
			"shardId":                      &types.AttributeValueMemberS{Value: "shardId-000000000005"},
		},
	})
	if err != nil {
		t.Fatalf("raw PutItem: %v", err)
	}
	seen := mustGet(t, s, key)
	if want := []string{sid + ":shardId-000000000001"}; !slices.Equal(seen.ParentShardIDs, want) {
		t.Fatalf("parents read as %v, want %v", seen.ParentShardIDs, want)
	}
	held := mustTake(t, s, seen, "go-node-1")
	children := []string{sid + ":shardId-000000000008", sid + ":shardId-000000000009"}
	if _, err := s.Checkpoint(bg, held, Checkpoint{SequenceNumber: CheckpointShardEnd}, children); err != nil {
		t.Fatalf("checkpoint with children: %v", err)
	}
	out, err := client.GetItem(bg, &dynamodb.GetItemInput{TableName: aws.String(s.Table()), Key: keyOf(key), ConsistentRead: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	if ss, ok := out.Item["childShardIds"].(*types.AttributeValueMemberSS); !ok || !sameSet(ss.Value, []string{"shardId-000000000008", "shardId-000000000009"}) {
		t.Fatalf("children stored as %#v, want the shard ids", out.Item["childShardIds"])
	}
	if got := mustGet(t, s, key); !sameSet(got.ChildShardIDs, children) {
		t.Fatalf("children read as %v, want %v", got.ChildShardIDs, children)
	}
	// A row kinactor creates: streamName and shardId apart, parents raw.
	child := sid + ":shardId-000000000008"
	mustCreate(t, s, Lease{Key: child, ParentShardIDs: []string{key}})
	out, err = client.GetItem(bg, &dynamodb.GetItemInput{TableName: aws.String(s.Table()), Key: keyOf(child), ConsistentRead: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := out.Item["streamName"].(*types.AttributeValueMemberS); !ok || v.Value != sid {
		t.Fatalf("streamName = %#v, want %s", out.Item["streamName"], sid)
	}
	if v, ok := out.Item["shardId"].(*types.AttributeValueMemberS); !ok || v.Value != "shardId-000000000008" {
		t.Fatalf("shardId = %#v", out.Item["shardId"])
	}
	if ss, ok := out.Item["parentShardId"].(*types.AttributeValueMemberSS); !ok || !slices.Equal(ss.Value, []string{"shardId-000000000005"}) {
		t.Fatalf("parentShardId = %#v, want the shard id", out.Item["parentShardId"])
	}
}

// testCounterExpiry drives ExpiryTracker with a fake clock over real rows: a
// lease that keeps being renewed never expires; one whose counter stops
// moving expires once the timeout has passed.
func testCounterExpiry(t *testing.T, _ *dynamodb.Client, newStore newStoreFunc) {
	s := newStore(t)
	const live, dead = "shardId-000000000010", "shardId-000000000011"
	mustCreate(t, s, Lease{Key: live, Checkpoint: Checkpoint{SequenceNumber: CheckpointTrimHorizon}})
	mustCreate(t, s, Lease{Key: dead, Checkpoint: Checkpoint{SequenceNumber: CheckpointTrimHorizon}})
	held := mustTake(t, s, mustGet(t, s, live), "A")
	mustTake(t, s, mustGet(t, s, dead), "B") // B then dies

	const timeout = 10 * time.Second
	tr := NewExpiryTracker(timeout)
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	step := 3 * time.Second
	expiredAt := time.Duration(-1)
	for i := range 8 {
		now := t0.Add(time.Duration(i) * step)
		leases, err := s.List(bg)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range leases {
			exp := tr.Observe(l, now)
			switch l.Key {
			case live:
				if exp {
					t.Fatalf("renewed lease reported expired at +%v", now.Sub(t0))
				}
			case dead:
				if exp && expiredAt < 0 {
					expiredAt = now.Sub(t0)
				}
				if !exp && expiredAt >= 0 {
					t.Fatalf("dead lease un-expired at +%v", now.Sub(t0))
				}
			}
		}
		if held, err = s.Renew(bg, held); err != nil { // A is alive
			t.Fatal(err)
		}
	}
	// Observed at 0, 3, 6, 9, 12 s: first reading ≥ 10 s after the first is 12 s.
	if expiredAt != 12*time.Second {
		t.Fatalf("dead lease expired at +%v, want +12s", expiredAt)
	}
	// Whoever takes the expired lease moves the counter: no longer expired.
	seen := mustGet(t, s, dead)
	taken := mustTake(t, s, seen, "A")
	if tr.Observe(taken, t0.Add(time.Hour)) {
		t.Fatal("freshly taken lease reported expired")
	}
}

func testDeleteAndList(t *testing.T, _ *dynamodb.Client, newStore newStoreFunc) {
	var w writeLog
	s := newStore(t, WithOnWrite(w.hook))
	s.scanLimit = 3 // force pagination
	var keys []string
	for i := range 10 {
		k := fmt.Sprintf("shardId-%012d", i)
		keys = append(keys, k)
		mustCreate(t, s, Lease{Key: k, Checkpoint: Checkpoint{SequenceNumber: CheckpointLatest}})
	}
	all, err := s.List(bg)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range all {
		got = append(got, l.Key)
	}
	slices.Sort(got)
	if !slices.Equal(got, keys) {
		t.Fatalf("List keys = %v", got)
	}
	l := mustTake(t, s, mustGet(t, s, keys[0]), "A")
	if err := s.Delete(bg, Lease{Key: keys[0], Counter: l.Counter - 1}); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Delete at a stale counter: %v, want ErrLeaseLost", err)
	}
	if err := s.Delete(bg, l); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Get(bg, keys[0]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Delete: %v, want ErrNotFound", err)
	}
	if ops := w.get(); ops[len(ops)-2] != "delete:fail" || ops[len(ops)-1] != "delete:ok" {
		t.Fatalf("OnWrite saw %v", ops)
	}
}

// testConditionFailureReturnsOld records whether the server honours
// ReturnValuesOnConditionCheckFailure=ALL_OLD; the store works either way
// (it falls back to a consistent GetItem), so this only logs.
func testConditionFailureReturnsOld(t *testing.T, client *dynamodb.Client, newStore newStoreFunc) {
	s := newStore(t)
	mustCreate(t, s, Lease{Key: shard0, Checkpoint: Checkpoint{SequenceNumber: CheckpointLatest}})
	_, err := client.UpdateItem(bg, &dynamodb.UpdateItemInput{
		TableName:                           aws.String(s.Table()),
		Key:                                 keyOf(shard0),
		UpdateExpression:                    aws.String("SET leaseCounter = leaseCounter + :one"),
		ConditionExpression:                 aws.String("leaseCounter = :bad"),
		ExpressionAttributeValues:           map[string]types.AttributeValue{":one": num(1), ":bad": num(41)},
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	var ccf *types.ConditionalCheckFailedException
	if !errors.As(err, &ccf) {
		t.Fatalf("UpdateItem: %v, want ConditionalCheckFailedException", err)
	}
	t.Logf("ReturnValuesOnConditionCheckFailure=ALL_OLD: server returned %d attributes", len(ccf.Item))
}

func equalLease(a, b Lease) bool {
	return a.Key == b.Key && a.Owner == b.Owner && a.Counter == b.Counter && a.Checkpoint == b.Checkpoint &&
		a.OwnerSwitchesSinceCheckpoint == b.OwnerSwitchesSinceCheckpoint &&
		slices.Equal(a.ParentShardIDs, b.ParentShardIDs) && slices.Equal(a.ChildShardIDs, b.ChildShardIDs) &&
		a.StartingHashKey == b.StartingHashKey && a.EndingHashKey == b.EndingHashKey
}

// lossyAPI applies the first n writes on the real server and then reports a
// 500 to the caller, as if the response had been lost on the way back.
type lossyAPI struct {
	DynamoAPI
	lose atomic.Int64
}

func (a *lossyAPI) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	out, err := a.DynamoAPI.UpdateItem(ctx, in, optFns...)
	if err == nil && a.lose.Add(-1) >= 0 {
		return nil, errInternal
	}
	return out, err
}

// testLostResponseThenRetry: a write applied server-side whose answer is a
// 500 is retried, the retry fails its condition, and the store recognises
// its own write (via ALL_OLD on DynamoDB Local, GetItem on dynalite).
func testLostResponseThenRetry(t *testing.T, client *dynamodb.Client, newStore newStoreFunc) {
	base := newStore(t)
	api := &lossyAPI{DynamoAPI: client}
	s := NewDynamoStore(api, base.Table(), WithRetryPolicy(backoff.Policy{Base: time.Millisecond, Cap: time.Millisecond}, 8))
	mustCreate(t, s, Lease{Key: shard0, Checkpoint: Checkpoint{SequenceNumber: CheckpointTrimHorizon}})

	api.lose.Store(1)
	l := mustTake(t, s, mustGet(t, s, shard0), "A")
	if l.Owner != "A" || l.Counter != 1 {
		t.Fatalf("Take = %+v", l)
	}
	api.lose.Store(1)
	cp := Checkpoint{SequenceNumber: "300", SubSequenceNumber: 2}
	l, err := s.Checkpoint(bg, l, cp, []string{"shardId-000000000009"})
	if err != nil || l.Counter != 2 || l.Checkpoint != cp {
		t.Fatalf("Checkpoint = %+v, %v", l, err)
	}
	api.lose.Store(1)
	if err := s.Release(bg, l); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if row := mustGet(t, s, shard0); row.Owner != "" || row.Counter != 3 || row.Checkpoint != cp {
		t.Fatalf("row = %+v", row)
	}
	// A lost response followed by someone else's write is a lost lease.
	l = mustTake(t, s, mustGet(t, s, shard0), "A")
	api.lose.Store(1)
	hook := &lossyThenSteal{lossyAPI: api, steal: func() { mustTake(t, base, mustGet(t, base, shard0), "B") }}
	s2 := NewDynamoStore(hook, base.Table(), WithRetryPolicy(backoff.Policy{Base: time.Millisecond, Cap: time.Millisecond}, 8))
	if _, err := s2.Renew(bg, l); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Renew after a lost response and a steal: %v, want ErrLeaseLost", err)
	}
}

// lossyThenSteal lets another owner take the lease right after the first
// (lost) write, before the retry.
type lossyThenSteal struct {
	*lossyAPI
	once  sync.Once
	steal func()
}

func (a *lossyThenSteal) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	out, err := a.lossyAPI.UpdateItem(ctx, in, optFns...)
	if errors.Is(err, errInternal) {
		a.once.Do(a.steal)
	}
	return out, err
}
