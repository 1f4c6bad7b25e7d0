package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/migrate"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
	"github.com/kinactor/kinactor/messages"
)

// shardRecords is what the stream holds, read with the SDK: each shard's
// sequence numbers in order, and its hash range.
type shardRecords struct {
	ids    []string // sorted shard ids
	seqs   map[string][]string
	ranges map[string][2]string
}

func readAllRecords(t *testing.T, kc *kinesis.Client, streamName string, want int) shardRecords {
	t.Helper()
	ctx := context.Background()
	out, err := kc.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(streamName)})
	requireNoError(t, err, "ListShards")
	sr := shardRecords{seqs: map[string][]string{}, ranges: map[string][2]string{}}
	total := 0
	for _, s := range out.Shards {
		id := aws.ToString(s.ShardId)
		sr.ids = append(sr.ids, id)
		sr.ranges[id] = [2]string{aws.ToString(s.HashKeyRange.StartingHashKey), aws.ToString(s.HashKeyRange.EndingHashKey)}
		it, err := kc.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{
			StreamName: aws.String(streamName), ShardId: s.ShardId, ShardIteratorType: ktypes.ShardIteratorTypeTrimHorizon,
		})
		requireNoError(t, err, "GetShardIterator")
		iter := it.ShardIterator
		for i := 0; i < 100 && iter != nil; i++ {
			r, err := kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: iter})
			requireNoError(t, err, "GetRecords")
			for _, rec := range r.Records {
				sr.seqs[id] = append(sr.seqs[id], aws.ToString(rec.SequenceNumber))
			}
			if len(r.Records) == 0 && aws.ToInt64(r.MillisBehindLatest) == 0 {
				break
			}
			iter = r.NextShardIterator
		}
		total += len(sr.seqs[id])
	}
	sort.Strings(sr.ids)
	if total != want {
		t.Fatalf("read %d records back from %s, wrote %d", total, streamName, want)
	}
	for _, id := range sr.ids {
		if len(sr.seqs[id]) < 4 {
			t.Fatalf("shard %s holds only %d records: too few to checkpoint in the middle", id, len(sr.seqs[id]))
		}
	}
	return sr
}

// checkResumed waits until every record after each shard's checkpoint
// (first[shard] is the index of the first record expected) is processed,
// then checks each exactly once and nothing before it.
func checkResumed(t *testing.T, led *ledger, sr shardRecords, first map[string]int) {
	t.Helper()
	expected := map[string]bool{}
	for _, id := range sr.ids {
		for _, seq := range sr.seqs[id][first[id]:] {
			expected[id+"/"+seq+"/0"] = true
		}
	}
	checkFor(t, 90*time.Second, func() error {
		led.mu.Lock()
		defer led.mu.Unlock()
		missing := 0
		for k := range expected {
			if led.count[k] == 0 {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d records after the checkpoints not processed yet", missing, len(expected))
		}
		return nil
	})
	led.mu.Lock()
	defer led.mu.Unlock()
	var bad []string
	for k, c := range led.count {
		switch {
		case !expected[k]:
			bad = append(bad, k+" (at or before its shard's checkpoint)")
		case c != 1:
			bad = append(bad, fmt.Sprintf("%s ×%d", k, c))
		}
	}
	sort.Strings(bad)
	if len(bad) > 0 {
		t.Errorf("%d records processed wrongly, e.g. %v", len(bad), bad[:min(5, len(bad))])
	}
	for shard, seqs := range led.byShard {
		for i := 1; i < len(seqs); i++ {
			if cmpSeq(seqs[i-1], seqs[i]) >= 0 {
				t.Errorf("shard %s: %s processed after %s", shard, seqs[i], seqs[i-1])
				break
			}
		}
	}
}

// checkCheckpointsAdvance waits until each shard's row holds its last
// record as checkpoint, owned by owner.
func checkCheckpointsAdvance(t *testing.T, store *lease.DynamoStore, sr shardRecords, owner string) {
	t.Helper()
	checkFor(t, 30*time.Second, func() error {
		for _, id := range sr.ids {
			l, err := store.Get(context.Background(), id)
			if err != nil {
				return err
			}
			last := sr.seqs[id][len(sr.seqs[id])-1]
			if l.Checkpoint != (lease.Checkpoint{SequenceNumber: last}) || l.Owner != owner {
				return fmt.Errorf("row %s: owner %q checkpoint %+v, want %q at the last record %s", id, l.Owner, l.Checkpoint, owner, last)
			}
		}
		return nil
	})
}

func sAttr(v string) dtypes.AttributeValue { return &dtypes.AttributeValueMemberS{Value: v} }
func nAttr(v string) dtypes.AttributeValue { return &dtypes.AttributeValueMemberN{Value: v} }

func putItems(t *testing.T, ddb *dynamodb.Client, table string, items ...map[string]dtypes.AttributeValue) {
	t.Helper()
	for _, item := range items {
		_, err := ddb.PutItem(context.Background(), &dynamodb.PutItemInput{TableName: aws.String(table), Item: item})
		requireNoError(t, err, "PutItem")
	}
}

// A lease table written by the Java KCL 2.x, its worker dead, is read as it
// is: a kinactor node takes the leases once their counters stood still for
// LeaseExpiry, resumes each shard after its checkpoint, skips the closed
// row, and keeps the attributes only Java writes.
//
// Shard 0 and 1: checkpoint in the middle (shard 1 also has a
// pendingCheckpoint further on, which is ignored as the Java KCL ignores it
// on restart). Shard 2: TRIM_HORIZON, read from the start. Shard 3: a
// checkpoint with checkpointSubSequenceNumber 3 (a KPL sub-record): today the
// shard resumes AFTER that sequence number, so the remaining sub-records of
// that aggregated record would be skipped (resuming inside a KPL record is
// not built yet); with plain records, as here, nothing is lost.
func TestMigrationJavaKCLTableReadAsIs(t *testing.T) {
	env := localaws.StartT(t, localaws.Kinesalite, localaws.DynamoDBLocal)
	kc, ddb := env.KinesisClient(), env.DynamoDBClient()
	ctx := context.Background()
	const streamName, table = "java-stream", "java-kcl-app"
	localaws.CreateStreamT(t, kc, streamName, 4)
	newProducer(kc, streamName, 32).put(t, 400)
	sr := readAllRecords(t, kc, streamName, 400)

	// the table exactly as the Java KCL creates it (LeaseRefresher.createLeaseTableIfNotExists)
	_, err := ddb.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(table),
		AttributeDefinitions: []dtypes.AttributeDefinition{{AttributeName: aws.String("leaseKey"), AttributeType: dtypes.ScalarAttributeTypeS}},
		KeySchema:            []dtypes.KeySchemaElement{{AttributeName: aws.String("leaseKey"), KeyType: dtypes.KeyTypeHash}},
		BillingMode:          dtypes.BillingModePayPerRequest,
	})
	requireNoError(t, err, "CreateTable")
	localaws.WaitTableT(t, ddb, table)

	first := map[string]int{} // index of the first record the node must process
	javaRow := func(i int, checkpoint string, sub int) map[string]dtypes.AttributeValue {
		id := sr.ids[i]
		return map[string]dtypes.AttributeValue{
			"leaseKey":                     sAttr(id),
			"leaseOwner":                   sAttr("java-worker-1"),
			"leaseCounter":                 nAttr(strconv.Itoa(40 + i)),
			"checkpoint":                   sAttr(checkpoint),
			"checkpointSubSequenceNumber":  nAttr(strconv.Itoa(sub)),
			"ownerSwitchesSinceCheckpoint": nAttr("1"),
			"startingHashKey":              sAttr(sr.ranges[id][0]),
			"endingHashKey":                sAttr(sr.ranges[id][1]),
			"throughputKBps":               nAttr("12.5"), // Java-only (DynamoDBLeaseSerializer, 2.6+)
		}
	}
	mid := func(i int) string {
		m := len(sr.seqs[sr.ids[i]]) / 2
		first[sr.ids[i]] = m + 1
		return sr.seqs[sr.ids[i]][m]
	}
	rows := []map[string]dtypes.AttributeValue{
		javaRow(0, mid(0), 0),
		javaRow(1, mid(1), 0),
		javaRow(2, lease.CheckpointTrimHorizon, 0),
		javaRow(3, mid(3), 3),
	}
	first[sr.ids[2]] = 0
	id1 := sr.ids[1]
	pending := sr.seqs[id1][len(sr.seqs[id1])-2]
	rows[1]["pendingCheckpoint"] = sAttr(pending) // Java-only: a prepared, uncommitted checkpoint
	rows[1]["pendingCheckpointSubSequenceNumber"] = nAttr("0")
	const closed = "shardId-000000000099" // a closed shard, read to its end by Java long ago
	rows = append(rows, map[string]dtypes.AttributeValue{
		"leaseKey":                     sAttr(closed),
		"leaseOwner":                   sAttr("java-worker-1"),
		"leaseCounter":                 nAttr("9"),
		"checkpoint":                   sAttr(lease.CheckpointShardEnd),
		"checkpointSubSequenceNumber":  nAttr("0"),
		"ownerSwitchesSinceCheckpoint": nAttr("0"),
		"childShardIds":                &dtypes.AttributeValueMemberSS{Value: []string{sr.ids[0]}},
	})
	putItems(t, ddb, table, rows...)

	led := newLedger()
	cfg := nodeConfig(t, env, streamName, "kinactor-app", "kin-node-1")
	cfg.TableName = table
	cfg.LeaseRenewInterval = time.Second
	cfg.LeaseExpiry = 3 * time.Second
	start := time.Now()
	runNode(t, cfg, func(_ context.Context, b messages.Batch) error {
		led.record(b)
		return nil
	})
	checkResumed(t, led, sr, first)
	t.Logf("resumed all 4 shards %v after the node started (leases taken by counter expiry)", time.Since(start).Round(100*time.Millisecond))
	store := lease.NewDynamoStore(ddb, table)
	checkCheckpointsAdvance(t, store, sr, "kin-node-1")

	for i, id := range sr.ids {
		out, err := ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(table), Key: map[string]dtypes.AttributeValue{"leaseKey": sAttr(id)}, ConsistentRead: aws.Bool(true)})
		requireNoError(t, err, "GetItem")
		if v, ok := out.Item["throughputKBps"].(*dtypes.AttributeValueMemberN); !ok || v.Value != "12.5" {
			t.Errorf("row %s lost the Java-only throughputKBps: %#v", id, out.Item["throughputKBps"])
		}
		for _, a := range []string{"startingHashKey", "endingHashKey"} {
			if v, ok := out.Item[a].(*dtypes.AttributeValueMemberS); !ok || v.Value == "" {
				t.Errorf("row %s lost %s", id, a)
			}
		}
		if i == 1 {
			if v, ok := out.Item["pendingCheckpoint"].(*dtypes.AttributeValueMemberS); !ok || v.Value != pending {
				t.Errorf("row %s lost the Java-only pendingCheckpoint: %#v", id, out.Item["pendingCheckpoint"])
			}
		}
		if sw, ok := out.Item["ownerSwitchesSinceCheckpoint"].(*dtypes.AttributeValueMemberN); !ok || sw.Value != "0" {
			t.Errorf("row %s: ownerSwitchesSinceCheckpoint %#v, want 0 after a checkpoint", id, out.Item["ownerSwitchesSinceCheckpoint"])
		}
	}
	// The closed shard is past the stream's retention (not listed): its
	// row is never taken, and the discovering node deletes it after two
	// listings without it, as the Java KCL collects garbage leases.
	checkFor(t, 60*time.Second, func() error {
		l, err := store.Get(ctx, closed)
		if errors.Is(err, lease.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if l.Owner != "java-worker-1" || l.Counter != 9 || !l.Checkpoint.IsShardEnd() {
			t.Fatalf("the closed row was taken or written: %+v", l)
		}
		return errors.New("the unlisted closed row is still there")
	})
	led.mu.Lock()
	if n := len(led.byShard[closed]); n > 0 {
		t.Errorf("%d records processed for the closed shard", n)
	}
	led.mu.Unlock()
}

// A vmware-go-kcl table (hash key ShardID; AssignedTo, LeaseTimeout,
// Checkpoint, ParentShardId as its checkpointer writes them), its workers
// stopped and leases expired, is migrated to a new table; a node on the new
// table resumes each shard after its checkpoint (one shard was never
// checkpointed: it starts at TRIM_HORIZON). A second run reports the rows
// as existing; a table with a live lease is refused unless forced.
func TestMigrationFromVMwareGoKCL(t *testing.T) {
	env := localaws.StartT(t, localaws.Kinesalite, localaws.DynamoDBLocal)
	kc, ddb := env.KinesisClient(), env.DynamoDBClient()
	ctx := context.Background()
	const streamName, oldTable, newTable = "vm-stream", "vm-app", "kinactor-from-vm"
	localaws.CreateStreamT(t, kc, streamName, 4)
	newProducer(kc, streamName, 32).put(t, 400)
	sr := readAllRecords(t, kc, streamName, 400)

	// the table as vmware-go-kcl's DynamoCheckpoint.createTable makes it
	createVM := func(name string) {
		_, err := ddb.CreateTable(ctx, &dynamodb.CreateTableInput{
			TableName:             aws.String(name),
			AttributeDefinitions:  []dtypes.AttributeDefinition{{AttributeName: aws.String("ShardID"), AttributeType: dtypes.ScalarAttributeTypeS}},
			KeySchema:             []dtypes.KeySchemaElement{{AttributeName: aws.String("ShardID"), KeyType: dtypes.KeyTypeHash}},
			ProvisionedThroughput: &dtypes.ProvisionedThroughput{ReadCapacityUnits: aws.Int64(10), WriteCapacityUnits: aws.Int64(10)},
		})
		requireNoError(t, err, "CreateTable "+name)
		localaws.WaitTableT(t, ddb, name)
	}
	createVM(oldTable)
	expired := time.Now().Add(-2 * time.Minute).UTC().Format(time.RFC3339)
	first := map[string]int{}
	var rows []map[string]dtypes.AttributeValue
	for i, id := range sr.ids {
		row := map[string]dtypes.AttributeValue{ // as CheckpointSequence writes it
			"ShardID":      sAttr(id),
			"AssignedTo":   sAttr(fmt.Sprintf("vm-worker-%d", i%2)),
			"LeaseTimeout": sAttr(expired),
		}
		if i < 3 {
			m := len(sr.seqs[id])/3 + i // a different place in each shard
			row["Checkpoint"] = sAttr(sr.seqs[id][m])
			first[id] = m + 1
		} // the last shard was leased but never checkpointed
		rows = append(rows, row)
	}
	putItems(t, ddb, oldTable, rows...)

	var out bytes.Buffer
	res, err := migrate.FromVMware(ctx, ddb, oldTable, newTable, migrate.Options{Out: &out})
	requireNoError(t, err, "FromVMware")
	t.Logf("migration:\n%s", out.String())
	if res != (migrate.Result{Copied: 4}) {
		t.Errorf("migration result %+v, want 4 copied", res)
	}
	if !strings.Contains(out.String(), sr.ids[3]+": copied: checkpoint TRIM_HORIZON") {
		t.Errorf("the never-checkpointed shard is not reported as TRIM_HORIZON:\n%s", out.String())
	}
	out.Reset()
	res, err = migrate.FromVMware(ctx, ddb, oldTable, newTable, migrate.Options{Out: &out})
	requireNoError(t, err, "second FromVMware")
	if res != (migrate.Result{Existing: 4}) || strings.Count(out.String(), "already exists") != 4 {
		t.Errorf("second run: %+v, want 4 existing:\n%s", res, out.String())
	}

	led := newLedger()
	cfg := nodeConfig(t, env, streamName, newTable, "kin-node-1")
	runNode(t, cfg, func(_ context.Context, b messages.Batch) error {
		led.record(b)
		return nil
	})
	checkResumed(t, led, sr, first)
	checkCheckpointsAdvance(t, lease.NewDynamoStore(ddb, newTable), sr, "kin-node-1")

	// a live lease: refused, then copied with Force
	createVM("vm-live")
	putItems(t, ddb, "vm-live", map[string]dtypes.AttributeValue{
		"ShardID":      sAttr(sr.ids[0]),
		"AssignedTo":   sAttr("vm-worker-alive"),
		"LeaseTimeout": sAttr(time.Now().Add(time.Minute).UTC().Format(time.RFC3339)),
		"Checkpoint":   sAttr(sr.seqs[sr.ids[0]][1]),
	})
	_, err = migrate.FromVMware(ctx, ddb, "vm-live", "kinactor-from-live", migrate.Options{})
	if !errors.Is(err, migrate.ErrLiveLeases) || !strings.Contains(err.Error(), sr.ids[0]) || !strings.Contains(err.Error(), "vm-worker-alive") {
		t.Errorf("live lease: err = %v, want ErrLiveLeases naming %s and vm-worker-alive", err, sr.ids[0])
	}
	res, err = migrate.FromVMware(ctx, ddb, "vm-live", "kinactor-from-live", migrate.Options{Force: true})
	requireNoError(t, err, "forced FromVMware")
	if res != (migrate.Result{Copied: 1, Live: 1}) {
		t.Errorf("forced: %+v, want 1 copied, 1 live", res)
	}
}
