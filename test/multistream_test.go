package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/internal/lease"
	kledger "github.com/kinactor/kinactor/internal/ledger"
	"github.com/kinactor/kinactor/internal/multistream"
	"github.com/kinactor/kinactor/internal/testenv/clusterrun"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

func localEnv(env *localaws.Env) []string {
	return []string{
		"AWS_ENDPOINT_URL_KINESIS=" + env.Kinesis.Endpoint,
		"AWS_ENDPOINT_URL_DYNAMODB=" + env.DynamoDB.Endpoint,
		"AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=local", "AWS_SECRET_ACCESS_KEY=local",
	}
}

// putN writes n records {"pk":..,"n":i} to stream and returns their
// sequence numbers by shard, in order.
func putN(t testing.TB, kc *kinesis.Client, stream string, n int) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for done := 0; done < n; {
		b := min(n-done, 500)
		var entries []ktypes.PutRecordsRequestEntry
		for i := range b {
			pk := fmt.Sprintf("%s-k%d", stream, (done+i)%16)
			entries = append(entries, ktypes.PutRecordsRequestEntry{PartitionKey: aws.String(pk), Data: []byte(fmt.Sprintf(`{"pk":%q,"n":%d}`, pk, done+i))})
		}
		res, err := kc.PutRecords(context.Background(), &kinesis.PutRecordsInput{StreamName: aws.String(stream), Records: entries})
		requireNoError(t, err, "PutRecords "+stream)
		if aws.ToInt32(res.FailedRecordCount) > 0 {
			t.Fatalf("PutRecords %s: %d failed", stream, aws.ToInt32(res.FailedRecordCount))
		}
		for _, r := range res.Records {
			out[aws.ToString(r.ShardId)] = append(out[aws.ToString(r.ShardId)], aws.ToString(r.SequenceNumber))
		}
		done += b
	}
	return out
}

// ledgerByStream counts the records in the ledgers by stream/shard/seq.
func ledgerByStream(t testing.TB, dir string) map[string]int {
	t.Helper()
	es, err := kledger.ReadDir(dir)
	requireNoError(t, err, "reading the ledgers")
	out := map[string]int{}
	for _, e := range es {
		out[e.Stream+"/"+e.Shard+"/"+e.Seq]++
	}
	return out
}

func writeStreamFile(t testing.TB, path string, names ...string) {
	t.Helper()
	tmp := path + ".tmp"
	requireNoError(t, os.WriteFile(tmp, []byte("# streams\n"+strings.Join(names, "\n")+"\n"), 0o644), "stream file")
	requireNoError(t, os.Rename(tmp, path), "stream file")
}

// TestMultiStream: 3 real nodes consume 3 streams of 4 shards with one
// lease table (KCL multi-stream keys), every record once with its stream;
// then one stream leaves the set and another joins it while they run: the
// one that left is released gracefully (its rows kept, nothing read from
// it after), the one that joined is read from its start.
func TestMultiStream(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	bin, env := buildWithServers(t, dir, localaws.Kinesalite, localaws.DynamoDBLocal)
	kc := env.KinesisClient()
	const app = "multistream"
	streams := []string{"ms-a", "ms-b", "ms-c", "ms-d"}
	for _, s := range streams {
		localaws.CreateStreamT(t, kc, s, 4)
	}
	file := filepath.Join(dir, "streams.txt")
	writeStreamFile(t, file, "ms-a", "ms-b", "ms-c")
	c, err := clusterrun.Start(ctx, clusterrun.Options{
		Bin: bin, Dir: dir, App: app, StreamFile: file, Nodes: 3, Env: localEnv(env),
		ExtraArgs: []string{"--stream-sync-interval", "1s", "--checkpoint-interval", "500ms"},
	})
	requireNoError(t, err, "starting the cluster")
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			for _, p := range c.All() {
				t.Logf("log of %s (tail):\n%s", p.Name, p.LogTail(3000))
			}
		}
	})
	want := map[string]bool{}
	for _, s := range streams[:3] {
		for shard, seqs := range putN(t, kc, s, 400) {
			for _, q := range seqs {
				want[s+"/"+shard+"/"+q] = true
			}
		}
	}
	store := lease.NewDynamoStore(env.DynamoDBClient(), app)
	ids := map[string]multistream.ID{}
	for _, s := range streams {
		id, err := multistream.Resolve(ctx, kc, s)
		requireNoError(t, err, "resolving "+s)
		ids[s] = id
	}
	checkFor(t, 90*time.Second, func() error {
		got := ledgerByStream(t, c.LedgerDir())
		for k := range want {
			if got[k] == 0 {
				return fmt.Errorf("%d of %d records processed (missing e.g. %s)", len(got), len(want), k)
			}
		}
		ls, err := store.List(ctx)
		if err != nil {
			return err
		}
		owners := map[string]int{}
		for _, l := range ls {
			if !multistream.IsKey(l.Key) {
				return fmt.Errorf("row %q is not a multi-stream key", l.Key)
			}
			owners[l.Owner]++
		}
		if len(ls) != 12 || owners[""] > 0 || len(owners) != 3 {
			return fmt.Errorf("%d rows, owners %v: want 12 rows over the 3 nodes", len(ls), owners)
		}
		return nil
	})
	for k, n := range ledgerByStream(t, c.LedgerDir()) {
		if !want[k] {
			t.Fatalf("processed %s, which was never written", k)
		}
		if n != 1 {
			t.Fatalf("%s processed %d times, want once (the cluster only grew: graceful handoffs)", k, n)
		}
	}

	// ms-c leaves the set, ms-d joins it.
	writeStreamFile(t, file, "ms-a", "ms-b", "ms-d")
	cID := ids["ms-c"].String()
	checkFor(t, 60*time.Second, func() error {
		ls, err := store.List(ctx)
		if err != nil {
			return err
		}
		released := 0
		for _, l := range ls {
			if multistream.StreamOf(l.Key) == cID {
				if l.Owner != "" {
					return fmt.Errorf("ms-c's %s still owned by %s", l.Key, l.Owner)
				}
				released++
			}
		}
		if released != 4 {
			return fmt.Errorf("%d of ms-c's 4 rows released and kept", released)
		}
		return nil
	})
	removed := 0
	for _, p := range c.Nodes() {
		st, err := c.Status(ctx, p)
		requireNoError(t, err, "status of "+p.Name)
		for _, m := range st.Moves {
			if m.Kind == "handoff" && m.Reason == "stream removed" && m.Stream == "ms-c" {
				removed++
			}
		}
	}
	if removed != 4 {
		t.Fatalf("%d handoffs for \"stream removed\" of ms-c's shards in the nodes' moves, want 4", removed)
	}
	late := map[string]bool{}
	for shard, seqs := range putN(t, kc, "ms-c", 100) {
		for _, q := range seqs {
			late["ms-c/"+shard+"/"+q] = true
		}
	}
	for _, s := range []string{"ms-a", "ms-d"} {
		for shard, seqs := range putN(t, kc, s, 200) {
			for _, q := range seqs {
				want[s+"/"+shard+"/"+q] = true
			}
		}
	}
	checkFor(t, 90*time.Second, func() error {
		got := ledgerByStream(t, c.LedgerDir())
		for k := range want {
			if got[k] == 0 {
				return fmt.Errorf("missing e.g. %s", k)
			}
		}
		return nil
	})
	got := ledgerByStream(t, c.LedgerDir())
	for k := range late {
		if got[k] > 0 {
			t.Fatalf("processed %s, written to ms-c after it left the set", k)
		}
	}
	dups := 0
	for _, n := range got {
		if n > 1 {
			dups++
		}
	}
	if dups > 0 {
		t.Fatalf("%d records processed more than once through the change of streams (graceful releases only)", dups)
	}
	ls, err := store.List(ctx)
	requireNoError(t, err, "reading the lease table")
	if len(ls) != 16 {
		t.Fatalf("%d rows, want 16 (ms-c's kept)", len(ls))
	}

	// kinactor status over the streams consumed now: a line per shard with
	// its stream and owner, and ms-c's kept rows counted.
	cmd := exec.Command(bin, "status", "--app", app, "--stream", "ms-a,ms-b,ms-d")
	cmd.Env = append(os.Environ(), localEnv(env)...)
	out, err := cmd.CombinedOutput()
	requireNoError(t, err, "kinactor status: "+string(out))
	t.Logf("kinactor status:\n%s", out)
	nodes := map[string]bool{}
	for _, p := range c.Nodes() {
		nodes[p.Name] = true
	}
	lines := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && strings.HasPrefix(f[0], "ms-") && f[2] == "open" {
			if !nodes[f[3]] {
				t.Errorf("status line %q: owner %q is not a node of the cluster", line, f[3])
			}
			lines[f[0]+"/"+f[1]] = true
		}
	}
	for _, s := range []string{"ms-a", "ms-b", "ms-d"} {
		for i := 0; i < 4; i++ {
			if k := fmt.Sprintf("%s/shardId-%012d", s, i); !lines[k] {
				t.Errorf("status: no open line for %s:\n%s", k, out)
			}
		}
	}
	if want := "rows kept for streams not named: " + cID + " (4 rows)"; !strings.Contains(string(out), want) {
		t.Errorf("status: no %q:\n%s", want, out)
	}

	// kinactor forget deletes ms-c's kept rows, and refuses a stream that
	// is consumed.
	forget := func(args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"forget", "--app", app}, args...)...)
		cmd.Env = append(os.Environ(), localEnv(env)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := forget("--stream", "ms-a", "--settle", "0s"); err == nil || !strings.Contains(out, "still consumed") {
		t.Fatalf("forget of a consumed stream: %v\n%s", err, out)
	}
	out2, err := forget("--stream", "ms-c", "--settle", "2s")
	requireNoError(t, err, "kinactor forget: "+out2)
	if !strings.Contains(out2, "deleted 4 rows of stream ms-c") {
		t.Fatalf("forget: %s", out2)
	}
	ls, err = store.List(ctx)
	requireNoError(t, err, "reading the lease table")
	for _, l := range ls {
		if multistream.StreamOf(l.Key) == cID {
			t.Fatalf("row %s of ms-c left after forget", l.Key)
		}
	}
	if len(ls) != 12 {
		t.Fatalf("%d rows after forget, want 12 (ms-a, ms-b, ms-d)", len(ls))
	}
}

// TestMultiStreamTakesOverAKCLTable: rows written exactly as the Java
// KCL's multi-stream mode writes them (owner a KCL worker that is gone,
// checkpoints mid-shard) are taken over by expiry and resumed after their
// checkpoints: nothing before them is processed, everything after is.
func TestMultiStreamTakesOverAKCLTable(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	bin, env := buildWithServers(t, dir, localaws.Kinesalite, localaws.DynamoDBLocal)
	kc := env.KinesisClient()
	const app, stream = "kclmulti", "kcl-orders"
	localaws.CreateStreamT(t, kc, stream, 2)
	seqs := putN(t, kc, stream, 200)
	id, err := multistream.Resolve(ctx, kc, stream)
	requireNoError(t, err, "resolving the stream")
	store := lease.NewDynamoStore(env.DynamoDBClient(), app)
	requireNoError(t, store.EnsureTable(ctx), "creating the table")
	want := map[string]bool{}
	for shard, list := range seqs {
		cut := len(list) / 2
		for _, q := range list[cut:] {
			want[stream+"/"+shard+"/"+q] = true
		}
		_, err := env.DynamoDBClient().PutItem(ctx, &dynamodb.PutItemInput{
			TableName: aws.String(app),
			Item: map[string]dtypes.AttributeValue{
				"leaseKey":                     &dtypes.AttributeValueMemberS{Value: id.Key(shard)},
				"leaseOwner":                   &dtypes.AttributeValueMemberS{Value: "java-kcl-worker-1"},
				"leaseCounter":                 &dtypes.AttributeValueMemberN{Value: "42"},
				"checkpoint":                   &dtypes.AttributeValueMemberS{Value: list[cut-1]},
				"checkpointSubSequenceNumber":  &dtypes.AttributeValueMemberN{Value: "0"},
				"ownerSwitchesSinceCheckpoint": &dtypes.AttributeValueMemberN{Value: "0"},
				"streamName":                   &dtypes.AttributeValueMemberS{Value: id.String()},
				"shardId":                      &dtypes.AttributeValueMemberS{Value: shard},
			},
		})
		requireNoError(t, err, "writing a KCL row")
	}
	c, err := clusterrun.Start(ctx, clusterrun.Options{
		Bin: bin, Dir: dir, App: app, Stream: stream, Nodes: 1, Env: localEnv(env),
		ExtraArgs: []string{"--multi-stream", "--renew-interval", "1s"},
	})
	requireNoError(t, err, "starting the node")
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			for _, p := range c.All() {
				t.Logf("log of %s (tail):\n%s", p.Name, p.LogTail(3000))
			}
		}
	})
	checkFor(t, 60*time.Second, func() error {
		got := ledgerByStream(t, c.LedgerDir())
		for k := range want {
			if got[k] == 0 {
				return fmt.Errorf("%d of %d records after the KCL checkpoints processed", len(got), len(want))
			}
		}
		return nil
	})
	for k := range ledgerByStream(t, c.LedgerDir()) {
		if !want[k] {
			t.Fatalf("processed %s, at or before the KCL checkpoint", k)
		}
	}
	ls, err := store.List(ctx)
	requireNoError(t, err, "reading the table")
	if len(ls) != 2 {
		t.Fatalf("%d rows, want the KCL's 2 (no new rows at the initial position)", len(ls))
	}
}

// TestMixedTableRefused: a node for many streams refuses a table holding
// single-stream rows, and a node for one stream refuses a table holding
// multi-stream rows; each says which row and what to do.
func TestMixedTableRefused(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	bin, env := buildWithServers(t, dir, localaws.Kinesalite, localaws.DynamoDBLocal)
	kc := env.KinesisClient()
	localaws.CreateStreamT(t, kc, "mix-a", 1)
	localaws.CreateStreamT(t, kc, "mix-b", 1)
	for _, tc := range []struct {
		table, key string
		args       []string
		want       string
	}{
		{"mixed-single", "shardId-000000000000", []string{"--stream", "mix-a,mix-b"}, `holds the single-stream row "shardId-000000000000"`},
		{"mixed-multi", "000000000000:mix-a:1:shardId-000000000000", []string{"--stream", "mix-a"}, `holds the multi-stream row "000000000000:mix-a:1:shardId-000000000000"`},
	} {
		store := lease.NewDynamoStore(env.DynamoDBClient(), tc.table)
		requireNoError(t, store.EnsureTable(ctx), "creating the table")
		requireNoError(t, store.Create(ctx, lease.Lease{Key: tc.key}), "writing a row")
		run, cancel := context.WithTimeout(ctx, 60*time.Second)
		cmd := exec.CommandContext(run, bin, append([]string{"node", "--app", tc.table, "--ledger-dir", filepath.Join(dir, tc.table)}, tc.args...)...)
		cmd.Env = append(os.Environ(), localEnv(env)...)
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Fatalf("%s: err %v, output:\n%s\nwant an error containing %s", tc.table, err, out, tc.want)
		}
		ls, err := store.List(ctx)
		requireNoError(t, err, "reading the table")
		if len(ls) != 1 {
			t.Fatalf("%s: %d rows after the refusal, want the 1 there was", tc.table, len(ls))
		}
	}
}
