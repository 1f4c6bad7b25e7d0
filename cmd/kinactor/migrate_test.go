package main

import (
	"bytes"
	"context"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

func TestMigrateFlagErrors(t *testing.T) {
	setAWSEnv(t, &localaws.Env{}) // nothing may be reached
	ctx := context.Background()
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--table", "a", "--to", "b", "--stream", "s"}, []string{"--from", "vmware-go-kcl"}},
		{[]string{"--from", "java-kcl", "--table", "a", "--to", "b", "--stream", "s"}, []string{`"java-kcl"`, "vmware-go-kcl", "needs no migration"}},
		{[]string{"--from", "gokini", "--table", "a", "--to", "b", "--stream", "s"}, []string{`"gokini"`, "vmware-go-kcl"}},
		{[]string{"--from", "vmware-go-kcl", "--to", "b", "--stream", "s"}, []string{"--table"}},
		{[]string{"--from", "vmware-go-kcl", "--table", "a", "--stream", "s"}, []string{"--to"}},
		{[]string{"--from", "vmware-go-kcl", "--table", "a", "--to", "b"}, []string{"--stream is required", "merged shard"}},
		{[]string{"--from", "vmware-go-kcl", "--table", "a", "--to", "a", "--stream", "s"}, []string{`"a"`}},
		{[]string{"--from", "vmware-go-kcl", "--table", "a", "--to", "b", "--stream", "s", "extra"}, []string{"extra"}},
	} {
		err := runMigrate(ctx, c.args, io.Discard, io.Discard)
		if err == nil {
			t.Errorf("%v: no error", c.args)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %q does not name %s", c.args, err, w)
			}
		}
	}
	var help bytes.Buffer
	if code := run([]string{"migrate", "-h"}, io.Discard, &help); code != 0 {
		t.Errorf("migrate -h: exit %d", code)
	}
	for _, want := range []string{"Java KCL 2.x lease table needs no migration", "--stream NAME", "kinesis:ListShards"} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, help.String())
		}
	}
}

// `kinactor migrate` on a vmware-go-kcl table of a stream whose two shards
// were merged: refused over a live lease, copied with --force (the merged
// shard with both its parents), and a second run reports the rows as
// existing.
func TestMigrateCommand(t *testing.T) {
	env := localaws.StartT(t, localaws.KinesisMock, localaws.Dynalite)
	setAWSEnv(t, env)
	ddb := env.DynamoDBClient()
	ctx := context.Background()
	if err := runProduce(ctx, []string{"--stream", "vm-stream", "--records", "10", "--keys", "2", "--shards", "2"}, io.Discard, io.Discard); err != nil {
		t.Fatalf("produce: %v", err)
	}
	var reshard bytes.Buffer
	if err := runReshard(ctx, []string{"--stream", "vm-stream", "--merge", "shardId-000000000000,shardId-000000000001"}, &reshard, io.Discard); err != nil {
		t.Fatalf("reshard: %v", err)
	}
	if !regexp.MustCompile(`(?m)^shardId-000000000002\s+open\s+shardId-000000000000,shardId-000000000001\s`).MatchString(reshard.String()) {
		t.Fatalf("after the merge, want shardId-000000000002 open with both parents:\n%s", reshard.String())
	}
	_, err := ddb.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:             aws.String("vm-app"),
		AttributeDefinitions:  []dtypes.AttributeDefinition{{AttributeName: aws.String("ShardID"), AttributeType: dtypes.ScalarAttributeTypeS}},
		KeySchema:             []dtypes.KeySchemaElement{{AttributeName: aws.String("ShardID"), KeyType: dtypes.KeyTypeHash}},
		ProvisionedThroughput: &dtypes.ProvisionedThroughput{ReadCapacityUnits: aws.Int64(5), WriteCapacityUnits: aws.Int64(5)},
	})
	if err != nil {
		t.Fatal(err)
	}
	localaws.WaitTableT(t, ddb, "vm-app")
	sv := func(v string) dtypes.AttributeValue { return &dtypes.AttributeValueMemberS{Value: v} }
	for _, item := range []map[string]dtypes.AttributeValue{
		{"ShardID": sv("shardId-000000000000"), "AssignedTo": sv("old-1"), "LeaseTimeout": sv(time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)), "Checkpoint": sv("SHARD_END")},
		{"ShardID": sv("shardId-000000000001"), "AssignedTo": sv("old-2"), "LeaseTimeout": sv(time.Now().Add(time.Hour).UTC().Format(time.RFC3339)), "Checkpoint": sv("49590338271490256608559692538361571095921575989136588899")},
		// vmware-go-kcl records only ParentShardId of the merged shard.
		{"ShardID": sv("shardId-000000000002"), "AssignedTo": sv("old-1"), "LeaseTimeout": sv(time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)), "Checkpoint": sv("49590338271490256608559692538361571095921575989136588898"), "ParentShardId": sv("shardId-000000000000")},
	} {
		if _, err := ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String("vm-app"), Item: item}); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"migrate", "--from", "vmware-go-kcl", "--table", "vm-app", "--to", "kin-app", "--stream", "vm-stream"}

	var stdout, stderr bytes.Buffer
	if code := run(args, &stdout, &stderr); code != 1 {
		t.Fatalf("live lease: exit %d, want 1; stderr:\n%s", code, stderr.String())
	}
	for _, want := range []string{"live leases", "shardId-000000000001", "old-2", "--force"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("refusal does not name %q:\n%s", want, stderr.String())
		}
	}

	stdout.Reset()
	stderr.Reset()
	if code := run(append(args, "--force"), &stdout, &stderr); code != 0 {
		t.Fatalf("--force: exit %d; stderr:\n%s", code, stderr.String())
	}
	t.Logf("migrate --force:\n%s", stdout.String())
	for _, want := range []string{
		"shardId-000000000000: copied: checkpoint SHARD_END\n",
		"shardId-000000000001: copied: checkpoint 49590338271490256608559692538361571095921575989136588899; forced over a live lease (owner old-2 until",
		"shardId-000000000002: copied: checkpoint 49590338271490256608559692538361571095921575989136588898, parents shardId-000000000000, shardId-000000000001 (shardId-000000000001 from stream vm-stream; the old table records only shardId-000000000000)\n",
		"3 copied, 0 already there, 0 unreadable; 1 given a parent from stream vm-stream",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("--force output lacks %q", want)
		}
	}
	leases, err := lease.NewDynamoStore(ddb, "kin-app").List(ctx)
	if err != nil || len(leases) != 3 {
		t.Fatalf("new table: %d rows, err %v", len(leases), err)
	}
	for _, l := range leases {
		var want []string
		if l.Key == "shardId-000000000002" {
			want = []string{"shardId-000000000000", "shardId-000000000001"}
		}
		got := slices.Clone(l.ParentShardIDs)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("row %s: parents %v, want %v", l.Key, got, want)
		}
	}

	stdout.Reset()
	if code := run(append(args, "--force"), &stdout, &stderr); code != 0 {
		t.Fatalf("second run: exit %d; stderr:\n%s", code, stderr.String())
	}
	if n := strings.Count(stdout.String(), "skipped: a row already exists in kin-app (left alone)\n"); n != 3 {
		t.Errorf("second run reported %d existing rows, want 3:\n%s", n, stdout.String())
	}
}
