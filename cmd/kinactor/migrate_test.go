package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/kinactor/kinactor/internal/localaws"
	"github.com/kinactor/kinactor/lease"
)

func TestMigrateFlagErrors(t *testing.T) {
	setAWSEnv(t, &localaws.Env{}) // nothing may be reached
	ctx := context.Background()
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--table", "a", "--to", "b"}, []string{"--from", "vmware-go-kcl"}},
		{[]string{"--from", "java-kcl", "--table", "a", "--to", "b"}, []string{`"java-kcl"`, "vmware-go-kcl", "needs no migration"}},
		{[]string{"--from", "gokini", "--table", "a", "--to", "b"}, []string{`"gokini"`, "vmware-go-kcl"}},
		{[]string{"--from", "vmware-go-kcl", "--to", "b"}, []string{"--table"}},
		{[]string{"--from", "vmware-go-kcl", "--table", "a"}, []string{"--to"}},
		{[]string{"--from", "vmware-go-kcl", "--table", "a", "--to", "a"}, []string{`"a"`}},
		{[]string{"--from", "vmware-go-kcl", "--table", "a", "--to", "b", "extra"}, []string{"extra"}},
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
	if !strings.Contains(help.String(), "Java KCL 2.x lease table needs no migration") {
		t.Errorf("help does not say Java tables need no migration:\n%s", help.String())
	}
}

// `kinactor migrate` on a vmware-go-kcl table: refused over a live lease,
// copied with --force, and a second run reports the rows as existing.
func TestMigrateCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("starts dynalite")
	}
	env := localaws.StartT(t, "", localaws.Dynalite)
	setAWSEnv(t, env)
	ddb := env.DynamoDBClient()
	ctx := context.Background()
	_, err := ddb.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:             aws.String("vm-app"),
		AttributeDefinitions:  []dtypes.AttributeDefinition{{AttributeName: aws.String("ShardID"), AttributeType: dtypes.ScalarAttributeTypeS}},
		KeySchema:             []dtypes.KeySchemaElement{{AttributeName: aws.String("ShardID"), KeyType: dtypes.KeyTypeHash}},
		ProvisionedThroughput: &dtypes.ProvisionedThroughput{ReadCapacityUnits: aws.Int64(5), WriteCapacityUnits: aws.Int64(5)},
	})
	if err != nil {
		t.Fatal(err)
	}
	poll(t, 30*time.Second, "vm-app ACTIVE", func() (bool, string) {
		out, err := ddb.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String("vm-app")})
		if err != nil {
			return false, err.Error()
		}
		return out.Table.TableStatus == dtypes.TableStatusActive, string(out.Table.TableStatus)
	})
	sv := func(v string) dtypes.AttributeValue { return &dtypes.AttributeValueMemberS{Value: v} }
	for _, item := range []map[string]dtypes.AttributeValue{
		{"ShardID": sv("shardId-000000000000"), "AssignedTo": sv("old-1"), "LeaseTimeout": sv(time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)), "Checkpoint": sv("49590338271490256608559692538361571095921575989136588898")},
		{"ShardID": sv("shardId-000000000001"), "AssignedTo": sv("old-2"), "LeaseTimeout": sv(time.Now().Add(time.Hour).UTC().Format(time.RFC3339)), "Checkpoint": sv("49590338271490256608559692538361571095921575989136588899")},
	} {
		if _, err := ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String("vm-app"), Item: item}); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"migrate", "--from", "vmware-go-kcl", "--table", "vm-app", "--to", "kin-app"}

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
	if n := strings.Count(stdout.String(), ": copied: checkpoint 4959"); n != 2 {
		t.Errorf("--force copied %d rows, want 2:\n%s", n, stdout.String())
	}
	leases, err := lease.NewDynamoStore(ddb, "kin-app").List(ctx)
	if err != nil || len(leases) != 2 {
		t.Fatalf("new table: %d rows, err %v", len(leases), err)
	}

	stdout.Reset()
	if code := run(append(args, "--force"), &stdout, &stderr); code != 0 {
		t.Fatalf("second run: exit %d; stderr:\n%s", code, stderr.String())
	}
	if n := strings.Count(stdout.String(), "skipped: a row already exists in kin-app"); n != 2 {
		t.Errorf("second run reported %d existing rows, want 2:\n%s", n, stdout.String())
	}
}
