package migrate

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/kinactor/kinactor/internal/localaws"
	"github.com/kinactor/kinactor/lease"
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
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		out, err := ddb.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(name)})
		if err == nil && out.Table.TableStatus == types.TableStatusActive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("table %s not ACTIVE: %v", name, err)
		}
		<-tick.C
	}
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
	if testing.Short() {
		t.Skip("starts dynalite")
	}
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
