package migrate

import (
	"bytes"
	"context"
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/kinactor/kinactor/internal/awswait"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// createVMwareTable creates a table as vmware-go-kcl's createTable does:
// hash key ShardID S, provisioned throughput.
func createVMwareTable(t *testing.T, ddb *dynamodb.Client, name string, rows ...map[string]types.AttributeValue) {
	t.Helper()
	ctx := context.Background()
	_, err := ddb.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:             aws.String(name),
		AttributeDefinitions:  []types.AttributeDefinition{{AttributeName: aws.String(VMwareShardID), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:             []types.KeySchemaElement{{AttributeName: aws.String(VMwareShardID), KeyType: types.KeyTypeHash}},
		ProvisionedThroughput: &types.ProvisionedThroughput{ReadCapacityUnits: aws.Int64(10), WriteCapacityUnits: aws.Int64(10)},
	})
	if err != nil {
		t.Fatalf("CreateTable %s: %v", name, err)
	}
	localaws.WaitTableT(t, ddb, name)
	for _, r := range rows {
		if _, err := ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(name), Item: r}); err != nil {
			t.Fatalf("PutItem: %v", err)
		}
	}
}

func s(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }

// vmwareRow is a row as vmware-go-kcl's CheckpointSequence writes it.
func vmwareRow(shard, owner string, timeout time.Time, checkpoint, parent string) map[string]types.AttributeValue {
	r := map[string]types.AttributeValue{VMwareShardID: s(shard)}
	if owner != "" {
		r[VMwareAssignedTo] = s(owner)
		r[VMwareLeaseTimeout] = s(timeout.UTC().Format(time.RFC3339))
	}
	if checkpoint != "" {
		r[VMwareCheckpoint] = s(checkpoint)
	}
	if parent != "" {
		r[VMwareParentShardID] = s(parent)
	}
	return r
}

func TestMigrateFromVMware(t *testing.T) {
	env := localaws.StartT(t, "", localaws.Dynalite)
	ddb := env.DynamoDBClient()
	ctx := context.Background()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func() time.Time { return now }
	past := now.Add(-time.Hour)
	seq := "49590338271490256608559692538361571095921575989136588898"

	t.Run("copies and is idempotent", func(t *testing.T) {
		createVMwareTable(t, ddb, "vm-app",
			vmwareRow("shardId-000000000000", "w1", past, seq, ""),
			vmwareRow("shardId-000000000001", "", time.Time{}, "", ""), // never checkpointed
			vmwareRow("shardId-000000000002", "w2", past, lease.CheckpointShardEnd, ""),
			vmwareRow("shardId-000000000003", "w2", past, seq, "shardId-000000000002"),
			map[string]types.AttributeValue{VMwareShardID: s("shardId-000000000004"), VMwareClaimRequest: s("w3"), VMwareCheckpoint: s(seq)},
		)
		var out bytes.Buffer
		res, err := FromVMware(ctx, ddb, "vm-app", "kin-app", Options{Now: clock, Out: &out})
		if err != nil {
			t.Fatalf("FromVMware: %v", err)
		}
		if res != (Result{Copied: 5}) {
			t.Errorf("result %+v, want 5 copied", res)
		}
		t.Logf("output:\n%s", out.String())
		for _, want := range []string{
			"warning: no stream given: each shard gets only the parent vm-app records (ParentShardId)",
			"shardId-000000000000: copied: checkpoint " + seq,
			"shardId-000000000001: copied: checkpoint TRIM_HORIZON (the old row had none)",
			"shardId-000000000002: copied: checkpoint SHARD_END",
			"shardId-000000000003: copied: checkpoint " + seq + ", parent shardId-000000000002",
			"pending ClaimRequest by w3 dropped",
		} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("output lacks %q", want)
			}
		}
		leases, err := lease.NewDynamoStore(ddb, "kin-app").List(ctx)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		got := map[string]lease.Lease{}
		for _, l := range leases {
			got[l.Key] = l
		}
		check := func(key, cp string, parents []string) {
			t.Helper()
			l, ok := got[key]
			if !ok {
				t.Errorf("no row %s in the new table", key)
				return
			}
			if l.Checkpoint != (lease.Checkpoint{SequenceNumber: cp}) || l.Owner != "" || l.Counter != 0 || !slices.Equal(l.ParentShardIDs, parents) {
				t.Errorf("row %s = %+v, want checkpoint %s, free, counter 0, parents %v", key, l, cp, parents)
			}
		}
		check("shardId-000000000000", seq, nil)
		check("shardId-000000000001", lease.CheckpointTrimHorizon, nil)
		check("shardId-000000000002", lease.CheckpointShardEnd, nil)
		check("shardId-000000000003", seq, []string{"shardId-000000000002"})
		check("shardId-000000000004", seq, nil)

		out.Reset()
		res, err = FromVMware(ctx, ddb, "vm-app", "kin-app", Options{Now: clock, Out: &out})
		if err != nil {
			t.Fatalf("second FromVMware: %v", err)
		}
		if res != (Result{Existing: 5}) {
			t.Errorf("second run: %+v, want 5 existing", res)
		}
		if n := strings.Count(out.String(), "skipped: a row already exists in kin-app"); n != 5 {
			t.Errorf("second run reported %d existing rows, want 5:\n%s", n, out.String())
		}
	})

	t.Run("live lease refused unless forced", func(t *testing.T) {
		createVMwareTable(t, ddb, "vm-live",
			vmwareRow("shardId-000000000000", "w1", past, seq, ""),
			vmwareRow("shardId-000000000001", "worker-alive", now.Add(10*time.Second), seq, ""),
		)
		_, err := FromVMware(ctx, ddb, "vm-live", "kin-live", Options{Now: clock})
		if !errors.Is(err, ErrLiveLeases) {
			t.Fatalf("err = %v, want ErrLiveLeases", err)
		}
		for _, want := range []string{"shardId-000000000001", "worker-alive", "1 of 2 shards"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not name %q", err, want)
			}
		}
		if strings.Contains(err.Error(), "shardId-000000000000") {
			t.Errorf("error %q names the expired lease", err)
		}
		if _, err := ddb.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String("kin-live")}); err == nil {
			t.Error("the new table was created although the migration was refused")
		}
		// an hour later the lease has timed out
		if _, err := FromVMware(ctx, ddb, "vm-live", "kin-later", Options{Now: func() time.Time { return now.Add(time.Hour) }}); err != nil {
			t.Errorf("after the timeout: %v", err)
		}
		var out bytes.Buffer
		res, err := FromVMware(ctx, ddb, "vm-live", "kin-live", Options{Now: clock, Force: true, Out: &out})
		if err != nil {
			t.Fatalf("forced: %v", err)
		}
		if res != (Result{Copied: 2, Live: 1}) {
			t.Errorf("forced: %+v, want 2 copied, 1 live", res)
		}
		if !strings.Contains(out.String(), "forced over a live lease (owner worker-alive until") {
			t.Errorf("forced output does not mention the live lease:\n%s", out.String())
		}
	})

	t.Run("wrong tables", func(t *testing.T) {
		if _, err := FromVMware(ctx, ddb, "no-such-table", "x", Options{}); err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("missing table: err = %v", err)
		}
		if err := lease.NewDynamoStore(ddb, "java-app").EnsureTable(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := FromVMware(ctx, ddb, "java-app", "x", Options{}); err == nil || !strings.Contains(err.Error(), "Java KCL") {
			t.Errorf("Java table: err = %v", err)
		}
		if _, err := FromVMware(ctx, ddb, "vm-app", "vm-app", Options{}); err == nil {
			t.Error("same table: no error")
		}
	})
}

// waitShards polls until the stream is ACTIVE and ListShards reports n
// shards (right after a reshard the stream may still be ACTIVE with the old
// shards), and returns them.
func waitShards(t *testing.T, kc *kinesis.Client, name string, n int) []stream.Shard {
	t.Helper()
	shards, err := awswait.Shards(context.Background(), kc, stream.NewClient(kc, name, ""), name, 30*time.Second,
		func(shards []stream.Shard) bool { return len(shards) == n })
	if err != nil {
		t.Fatalf("stream %s: not ACTIVE with %d shards in time (%d shards): %v", name, n, len(shards), err)
	}
	return shards
}

// A shard made by MergeShards has two parents, but vmware-go-kcl's table
// stores only ParentShardId: the adjacent parent must come from the stream.
func TestMigrateMergedShardParents(t *testing.T) {
	env := localaws.StartT(t, localaws.KinesisMock, localaws.Dynalite)
	kc, ddb := env.KinesisClient(), env.DynamoDBClient()
	ctx := context.Background()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func() time.Time { return now }
	past := now.Add(-time.Hour)
	seq := "49590338271490256608559692538361571095921575989136588898"

	const name = "orders"
	if _, err := kc.CreateStream(ctx, &kinesis.CreateStreamInput{StreamName: aws.String(name), ShardCount: aws.Int32(3)}); err != nil {
		t.Fatal(err)
	}
	roots := waitShards(t, kc, name, 3)
	slices.SortFunc(roots, func(a, b stream.Shard) int { return strings.Compare(a.StartingHashKey, b.StartingHashKey) })
	// Merge the two lowest (adjacent) shards; split the third.
	if _, err := kc.MergeShards(ctx, &kinesis.MergeShardsInput{
		StreamName: aws.String(name), ShardToMerge: aws.String(roots[0].ID), AdjacentShardToMerge: aws.String(roots[1].ID),
	}); err != nil {
		t.Fatal(err)
	}
	waitShards(t, kc, name, 4)
	lo, _ := new(big.Int).SetString(roots[2].StartingHashKey, 10)
	hi, _ := new(big.Int).SetString(roots[2].EndingHashKey, 10)
	mid := new(big.Int).Rsh(new(big.Int).Add(lo, hi), 1)
	if _, err := kc.SplitShard(ctx, &kinesis.SplitShardInput{
		StreamName: aws.String(name), ShardToSplit: aws.String(roots[2].ID), NewStartingHashKey: aws.String(mid.String()),
	}); err != nil {
		t.Fatal(err)
	}
	all := waitShards(t, kc, name, 6)
	var merged stream.Shard
	var splits []stream.Shard
	for _, sh := range all {
		switch {
		case sh.AdjacentParentShardID != "":
			merged = sh
		case sh.ParentShardID == roots[2].ID:
			splits = append(splits, sh)
		}
	}
	if merged.ID == "" || len(splits) != 2 {
		t.Fatalf("lineage after the merge and the split: %+v", all)
	}
	t.Logf("merged %s: parent %s, adjacent parent %s", merged.ID, merged.ParentShardID, merged.AdjacentParentShardID)

	// The old table, as vmware-go-kcl writes it: the merged child records
	// ParentShardId only. shardId-000000000099 is no longer in the stream
	// (past retention): its old parent is kept.
	createVMwareTable(t, ddb, "vm-merge",
		vmwareRow(roots[0].ID, "w1", past, lease.CheckpointShardEnd, ""),
		vmwareRow(roots[1].ID, "w2", past, lease.CheckpointShardEnd, ""),
		vmwareRow(roots[2].ID, "w1", past, lease.CheckpointShardEnd, ""),
		vmwareRow(merged.ID, "w1", past, seq, merged.ParentShardID),
		vmwareRow(splits[0].ID, "w2", past, seq, roots[2].ID),
		vmwareRow(splits[1].ID, "", time.Time{}, "", roots[2].ID),
		vmwareRow("shardId-000000000099", "w2", past, seq, "shardId-000000000098"),
	)
	var out bytes.Buffer
	opts := Options{Now: clock, Out: &out, Stream: stream.NewClient(kc, name, ""), StreamName: name}
	res, err := FromVMware(ctx, ddb, "vm-merge", "kin-merge", opts)
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatalf("FromVMware: %v", err)
	}
	if want := (Result{Copied: 7, ParentsAdded: 1, NotInStream: 1}); res != want {
		t.Errorf("result %+v, want %+v", res, want)
	}
	for _, want := range []string{
		merged.ID + ": copied: checkpoint " + seq + ", parents " + merged.ParentShardID + ", " + merged.AdjacentParentShardID +
			" (" + merged.AdjacentParentShardID + " from stream orders; the old table records only " + merged.ParentShardID + ")\n",
		splits[0].ID + ": copied: checkpoint " + seq + ", parent " + roots[2].ID + "\n",
		"shardId-000000000099: copied: checkpoint " + seq + ", parent shardId-000000000098 (from the old table: stream orders no longer lists the shard)\n",
		roots[0].ID + ": copied: checkpoint SHARD_END\n",
		"1 given a parent from stream orders that the old table lacks, 1 not listed by it any more",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(out.String(), "warning") {
		t.Errorf("unexpected warning in the output")
	}
	leases, err := lease.NewDynamoStore(ddb, "kin-merge").List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, l := range leases {
		p := slices.Clone(l.ParentShardIDs)
		slices.Sort(p)
		got[l.Key] = p
	}
	sorted := func(ids ...string) []string { slices.Sort(ids); return ids }
	for key, want := range map[string][]string{
		roots[0].ID:            nil,
		roots[1].ID:            nil,
		roots[2].ID:            nil,
		merged.ID:              sorted(roots[0].ID, roots[1].ID),
		splits[0].ID:           {roots[2].ID},
		splits[1].ID:           {roots[2].ID},
		"shardId-000000000099": {"shardId-000000000098"},
	} {
		p, ok := got[key]
		if !ok {
			t.Errorf("no row %s in the new table", key)
			continue
		}
		if !slices.Equal(p, want) {
			t.Errorf("row %s: parents %v, want %v", key, p, want)
		}
	}

	// Run again: every row is there and left alone, without a warning.
	out.Reset()
	if res, err := FromVMware(ctx, ddb, "vm-merge", "kin-merge", opts); err != nil || res != (Result{Existing: 7}) {
		t.Errorf("second run: %+v, %v", res, err)
	}
	if strings.Contains(out.String(), "warning") {
		t.Errorf("second run warns:\n%s", out.String())
	}

	// A table migrated without the stream (as the old migrate did) lacks
	// the adjacent parent; running again with the stream says so.
	out.Reset()
	if _, err := FromVMware(ctx, ddb, "vm-merge", "kin-nostream", Options{Now: clock, Out: &out}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "warning: no stream given") {
		t.Errorf("no warning without a stream:\n%s", out.String())
	}
	out.Reset()
	if _, err := FromVMware(ctx, ddb, "vm-merge", "kin-nostream", opts); err != nil {
		t.Fatal(err)
	}
	if want := merged.ID + ": skipped: a row already exists in kin-nostream (left alone); warning: it lacks the parent " + merged.AdjacentParentShardID; !strings.Contains(out.String(), want) {
		t.Errorf("output lacks %q:\n%s", want, out.String())
	}
	if n := strings.Count(out.String(), "warning"); n != 1 {
		t.Errorf("%d warnings, want 1:\n%s", n, out.String())
	}

	// The wrong stream: a table whose parents the stream contradicts is
	// refused before anything is written.
	createVMwareTable(t, ddb, "vm-other",
		vmwareRow(splits[0].ID, "w2", past, seq, roots[0].ID),
		vmwareRow(roots[1].ID, "w2", past, seq, "shardId-000000000042"),
	)
	_, err = FromVMware(ctx, ddb, "vm-other", "kin-other", opts)
	if !errors.Is(err, ErrLineageMismatch) {
		t.Fatalf("contradicting lineage: err = %v, want ErrLineageMismatch", err)
	}
	for _, want := range []string{
		splits[0].ID + " (old table: parent " + roots[0].ID + "; stream: parents " + roots[2].ID + ")",
		roots[1].ID + " (old table: parent shardId-000000000042; stream: no parents)",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if _, err := ddb.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String("kin-other")}); err == nil {
		t.Error("the new table was created although the lineage was refused")
	}

	// A stream that does not exist.
	_, err = FromVMware(ctx, ddb, "vm-merge", "kin-nosuch", Options{Now: clock, Stream: stream.NewClient(kc, "no-such-stream", ""), StreamName: "no-such-stream"})
	if !errors.Is(err, stream.ErrShardNotFound) || !strings.Contains(err.Error(), "stream no-such-stream does not exist") {
		t.Errorf("missing stream: err = %v", err)
	}
	if _, err := ddb.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String("kin-nosuch")}); err == nil {
		t.Error("the new table was created although the stream does not exist")
	}
}
