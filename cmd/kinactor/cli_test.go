package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor"
	"github.com/kinactor/kinactor/internal/ledger"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
	"github.com/kinactor/kinactor/messages"
)

// syncBuffer is a bytes.Buffer safe for a node's logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// setAWSEnv points the SDK's environment at env's loopback servers only.
func setAWSEnv(t *testing.T, env *localaws.Env) {
	t.Helper()
	dir := t.TempDir()
	vars := map[string]string{
		"AWS_REGION":                  "us-east-1",
		"AWS_ACCESS_KEY_ID":           "local",
		"AWS_SECRET_ACCESS_KEY":       "local",
		"AWS_SESSION_TOKEN":           "",
		"AWS_PROFILE":                 "",
		"AWS_ENDPOINT_URL":            "",
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_CONFIG_FILE":             filepath.Join(dir, "none"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "none"),
		"AWS_ENDPOINT_URL_KINESIS":    "http://127.0.0.1:1", // refused unless a server is given
		"AWS_ENDPOINT_URL_DYNAMODB":   "http://127.0.0.1:1",
	}
	if env.Kinesis != nil {
		vars["AWS_ENDPOINT_URL_KINESIS"] = env.Kinesis.Endpoint
	}
	if env.DynamoDB != nil {
		vars["AWS_ENDPOINT_URL_DYNAMODB"] = env.DynamoDB.Endpoint
	}
	for k, v := range vars {
		t.Setenv(k, v)
	}
}

func poll(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s (%s)", what, timeout, state)
		}
		<-tick.C
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var recordData = regexp.MustCompile(`^\{"pk":"(k\d+)","n":(\d+)\}$`)

// checkSequences checks that data (in stream order per shard) holds, for
// each of keys k0..k{keys-1}, n = 1..per in order.
func checkSequences(t *testing.T, byShard map[string][][]byte, keys, per int) {
	t.Helper()
	next := map[string]int{}
	for shard, ds := range byShard {
		for _, d := range ds {
			m := recordData.FindStringSubmatch(string(d))
			if m == nil {
				t.Fatalf("%s: record data %q", shard, d)
			}
			var n int
			fmt.Sscan(m[2], &n)
			if n != next[m[1]]+1 {
				t.Fatalf("%s: key %s n=%d after n=%d", shard, m[1], n, next[m[1]])
			}
			next[m[1]] = n
		}
	}
	if len(next) != keys {
		t.Fatalf("%d keys, want %d: %v", len(next), keys, next)
	}
	for k, n := range next {
		if n != per {
			t.Fatalf("key %s: last n %d, want %d", k, n, per)
		}
	}
}

// readStream reads every record of every shard from TRIM_HORIZON.
func readStream(t *testing.T, kc *kinesis.Client, name string) map[string][][]byte {
	t.Helper()
	ctx := context.Background()
	out, err := kc.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(name)})
	if err != nil {
		t.Fatal(err)
	}
	byShard := map[string][][]byte{}
	for _, s := range out.Shards {
		it, err := kc.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{StreamName: aws.String(name), ShardId: s.ShardId, ShardIteratorType: types.ShardIteratorTypeTrimHorizon})
		if err != nil {
			t.Fatal(err)
		}
		iter := it.ShardIterator
		for iter != nil {
			r, err := kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: iter})
			if err != nil {
				t.Fatal(err)
			}
			for _, rec := range r.Records {
				byShard[aws.ToString(s.ShardId)] = append(byShard[aws.ToString(s.ShardId)], rec.Data)
			}
			if len(r.Records) == 0 && aws.ToInt64(r.MillisBehindLatest) == 0 {
				break
			}
			iter = r.NextShardIterator
		}
	}
	return byShard
}

func TestFlagErrors(t *testing.T) {
	setAWSEnv(t, &localaws.Env{}) // nothing may be reached
	ctx := context.Background()
	for _, c := range []struct {
		run  func(context.Context, []string, io.Writer, io.Writer) error
		args []string
		want []string
	}{
		{runNode, []string{"--app", "a", "--stream", "s", "--initial-position", "FOO"}, []string{"--initial-position", "FOO"}},
		{runNode, []string{"--app", "a", "--stream", "s", "--initial-position", "AT_TIMESTAMP", "--timestamp", "yesterday"}, []string{"--timestamp", "yesterday"}},
		{runNode, []string{"--app", "a", "--stream", "s", "--processor", "nope"}, []string{"--processor", "nope"}},
		{runNode, []string{"--app", "a", "--stream", "s", "--log-level", "loud"}, []string{"--log-level", "loud"}},
		{runNode, []string{"--app", "a", "--stream", "s", "--bind", "nohost"}, []string{"--bind", "nohost"}},
		{runNode, []string{"--app", "a", "--stream", "s", "--bind", "127.0.0.1:0", "--join", "a:1,b"}, []string{"--join", `"b"`}},
		{runNode, []string{"--app", "a", "--stream", "s", "--join", "a:1"}, []string{"--join", "--bind"}},
		{runNode, []string{"--app", "a", "--stream", "s", "--bind", "127.0.0.1:0", "--weight", "0"}, []string{"--weight", "0"}},
		{runNode, []string{"--app", "a", "--stream", "s", "--sync-interval", "-1s"}, []string{"--sync-interval", "-1s"}},
		{runNode, []string{"--stream", "s"}, []string{"--app"}},
		{runNode, []string{"--app", "a", "--stream", "s", "--on-failure", "s3:x"}, []string{`--on-failure "s3:x": unknown kind "s3" (want dir:PATH, kinesis:STREAM or dynamodb:TABLE)`}},
		{runNode, []string{"--app", "a", "--stream", "s", "--on-failure", "dynamodb:x"}, []string{"--on-failure", `"dynamodb:x"`, "table name"}},
		{runNode, []string{"--app", "a", "--stream", "s", "--on-failure", "dir:/tmp/f", "--failure-policy", "stop-shard"}, []string{"--on-failure", "--failure-policy", "stop-shard"}},
		{runNode, []string{"--app", "a", "--stream", "s", "--failure-policy", "dead-letter"}, []string{"--failure-policy dead-letter", "--on-failure"}},
		{runNode, []string{"--app", "a", "--stream", "s", "--failure-policy", "skip"}, []string{"--failure-policy", `"skip"`}},
		{runNode, []string{"--app", "a", "--stream", "s", "--on-failure", "kinesis:s"}, []string{"--on-failure", `"kinesis:s"`, "--stream"}},
		{runNode, []string{"--app", "a", "--stream", "s", "--max-attempts", "0"}, []string{"--max-attempts 0"}},
		{runNode, []string{"--app", "a", "--stream", "s", "--parallelization", "0"}, []string{"--parallelization 0", "1 to 100"}},
		{runNode, []string{"--app", "a", "--stream", "s", "--parallelization", "101"}, []string{"--parallelization 101"}},
		{runNode, []string{"--app", "a", "--stream", "s", "--max-record-age", "-1s"}, []string{"--max-record-age -1s"}},
		{runNode, []string{"--app", "a", "--stream", "s", "--max-record-age", "1m"}, []string{"--max-record-age 1m0s needs --on-failure"}},
		{runNode, []string{"--app", "a", "--stream", "s", "--record-delay", "-1ms"}, []string{"--record-delay -1ms"}},
		{runNode, []string{"--app", "a", "--stream", "s", "--fail-mode", "some"}, []string{"--fail-mode", `"some"`}},
		{runNode, []string{"--app", "a", "--stream", "s", "--fail-keys", "a,,b"}, []string{"--fail-keys", `"a,,b"`}},
		{runNode, []string{"--app", "a", "--stream", "s", "--processor", "log", "--fail-keys", "a"}, []string{"--fail-keys", "--processor ledger", `"log"`}},
		{runProduce, []string{"--stream", "s", "--records", "0"}, []string{"--records", "0"}},
		{runProduce, []string{"--stream", "s", "--records", "5", "--batch", "501"}, []string{"--batch", "501"}},
		{runProduce, []string{"--stream", "s", "--records", "5", "--rate", "-2"}, []string{"--rate", "-2"}},
		{runStatus, []string{"--app", "a"}, []string{"--stream"}},
		{runForget, []string{"--app", "a"}, []string{"--stream"}},
		{runForget, []string{"--stream", "s"}, []string{"--app"}},
		{runForget, []string{"--app", "a", "--stream", "s:x"}, []string{"--stream", `"s:x"`}},
		{runForget, []string{"--app", "a", "--stream", "s", "--settle", "-1s"}, []string{"--settle", "-1s"}},
		{runForget, []string{"--app", "a", "--stream", "s", "--settle", "1m", "--timeout", "30s"}, []string{"--timeout", "30s", "--settle"}},
		{runReshard, []string{"--stream", "s"}, []string{"--split", "--merge", "--count"}},
		{runReshard, []string{"--stream", "s", "--merge", "a"}, []string{"--merge", `"a"`}},
		{runReshard, []string{"--stream", "s", "--count", "-1"}, []string{"--count", "-1"}},
	} {
		err := c.run(ctx, c.args, io.Discard, io.Discard)
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
}

func TestProduceNodeStatus(t *testing.T) {
	env := localaws.StartT(t, localaws.Kinesalite, localaws.Dynalite)
	setAWSEnv(t, env)
	ctx := context.Background()
	const (
		streamName = "cli-stream"
		app        = "cli-app"
		keys       = 5
		per        = 100
	)

	// produce: a new 2-shard stream, 500 records over 5 keys.
	var out bytes.Buffer
	if err := runProduce(ctx, []string{"--stream", streamName, "--records", fmt.Sprint(keys * per), "--keys", fmt.Sprint(keys), "--shards", "2"}, &out, io.Discard); err != nil {
		t.Fatalf("produce: %v", err)
	}
	if !regexp.MustCompile(`(?m)^total\s+500\b`).MatchString(out.String()) || !regexp.MustCompile(`(?m)^k4\s+100\s+1\s+100\b`).MatchString(out.String()) {
		t.Fatalf("produce output:\n%s", out.String())
	}
	kc := env.KinesisClient()
	sum, err := kc.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(streamName)})
	if err != nil || aws.ToInt32(sum.StreamDescriptionSummary.OpenShardCount) != 2 {
		t.Fatalf("stream after produce: %+v, %v", sum, err)
	}
	byShard := readStream(t, kc, streamName)
	checkSequences(t, byShard, keys, per)

	// node: ledger processor, gossip and HTTP on free ports.
	dir := t.TempDir()
	readyFile := filepath.Join(dir, "ready.json")
	ledgerDir := filepath.Join(dir, "ledger")
	nodeCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- runNode(nodeCtx, []string{"--app", app, "--stream", streamName,
			"--bind", "127.0.0.1:0", "--http", "127.0.0.1:0", "--ready-file", readyFile,
			"--ledger-dir", ledgerDir, "--checkpoint-interval", "200ms", "--sync-interval", "1s",
			"--log-level", "warn"}, io.Discard, logs)
	}()
	var ready nodeReady
	poll(t, 60*time.Second, "ready file", func() (bool, string) {
		select {
		case err := <-done:
			t.Fatalf("runNode returned early: %v\n%s", err, logs.String())
		default:
		}
		b, err := os.ReadFile(readyFile)
		if err != nil {
			return false, err.Error()
		}
		return json.Unmarshal(b, &ready) == nil, string(b)
	})
	if ready.Node == "" || ready.HTTP == "" || strings.HasSuffix(ready.HTTP, ":0") {
		t.Fatalf("ready file: %+v", ready)
	}
	if !strings.Contains(logs.String(), fmt.Sprintf("node %s gossip ", ready.Node)) {
		t.Fatalf("no ready line in stderr:\n%s", logs.String())
	}
	base := "http://" + ready.HTTP
	if code, body := httpGet(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz: %d %s", code, body)
	}
	if code, body := httpGet(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz: %d %s", code, body)
	}

	// Every produced record reaches the ledger.
	want := map[string]bool{}
	for _, ds := range byShard {
		for _, d := range ds {
			want[string(d)] = true
		}
	}
	poll(t, 60*time.Second, "ledger complete", func() (bool, string) {
		es, err := ledger.ReadDir(ledgerDir)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, e := range es {
			seen[string(e.Data)] = true
		}
		return len(seen) == len(want), fmt.Sprintf("%d of %d", len(seen), len(want))
	})

	code, body := httpGet(t, base+"/status")
	if st, err := decodeNodeStatus([]byte(body)); code != 200 || err != nil || st.Node != ready.Node || len(st.Members) == 0 {
		t.Fatalf("/status: %d %s (%v)", code, body, err)
	}
	if code, body := httpGet(t, base+"/metrics"); code != 200 || !strings.Contains(body, "kinactor_records_processed_total") {
		t.Fatalf("/metrics: %d, kinactor_records_processed_total missing", code)
	}

	// status: every shard, and the node's view.
	out.Reset()
	if err := runStatus(ctx, []string{"--app", app, "--stream", streamName, "--http", ready.HTTP}, &out, io.Discard); err != nil {
		t.Fatalf("status: %v", err)
	}
	for shard := range byShard {
		if !regexp.MustCompile(`(?m)^` + shard + `\s+open\s`).MatchString(out.String()) {
			t.Errorf("status: no open row for %s:\n%s", shard, out.String())
		}
	}
	if !strings.Contains(out.String(), "node "+ready.Node+" sees") {
		t.Errorf("status: no node view:\n%s", out.String())
	}

	// Graceful stop: exit 0, ledger holds every record, all from this node.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("runNode after cancel: %v\n%s", err, logs.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatal("runNode did not return after cancel")
	}
	es, err := ledger.ReadDir(ledgerDir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, e := range es {
		if e.Node != ready.Node {
			t.Fatalf("ledger line of node %q, want %q", e.Node, ready.Node)
		}
		got[string(e.Data)] = true
	}
	for d := range want {
		if !got[d] {
			t.Fatalf("record %s missing from the ledger", d)
		}
	}
	// The released leases are visible to status.
	out.Reset()
	if err := runStatus(ctx, []string{"--app", app, "--stream", streamName}, &out, io.Discard); err != nil {
		t.Fatalf("status after stop: %v", err)
	}
	if strings.Contains(out.String(), ready.Node) {
		t.Errorf("status after a graceful stop still shows owner %s:\n%s", ready.Node, out.String())
	}
}

func TestReshardSplit(t *testing.T) {
	env := localaws.StartT(t, localaws.KinesisMock, "")
	setAWSEnv(t, env)
	ctx := context.Background()
	if err := runProduce(ctx, []string{"--stream", "rs", "--records", "10", "--keys", "2", "--shards", "2"}, io.Discard, io.Discard); err != nil {
		t.Fatalf("produce: %v", err)
	}
	var out bytes.Buffer
	if err := runReshard(ctx, []string{"--stream", "rs", "--split", "shardId-000000000000"}, &out, io.Discard); err != nil {
		t.Fatalf("reshard: %v", err)
	}
	open := regexp.MustCompile(`(?m)^shardId-\d+\s+open\s`).FindAllString(out.String(), -1)
	closed := regexp.MustCompile(`(?m)^shardId-000000000000\s+closed\s`).FindAllString(out.String(), -1)
	if len(open) != 3 || len(closed) != 1 {
		t.Fatalf("after split: %d open, %d closed:\n%s", len(open), len(closed), out.String())
	}
	if err := runReshard(ctx, []string{"--stream", "rs", "--split", "shardId-000000000000"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("splitting a closed shard: %v", err)
	}
}

func TestFailureFlags(t *testing.T) {
	for _, c := range []struct {
		onFailure, policy string
		spec              string // "" for none
		want              kinactor.FailurePolicy
	}{
		{"", "", "", ""},
		{"", "retry", "", kinactor.PolicyRetry},
		{"", "stop-shard", "", kinactor.PolicyStopShard},
		{"dir:/var/failed", "", "dir:/var/failed", kinactor.PolicyDeadLetter},
		{"kinesis:dlq", "dead-letter", "kinesis:dlq", kinactor.PolicyDeadLetter},
		{"dynamodb:failed-records", "", "dynamodb:failed-records", kinactor.PolicyDeadLetter},
	} {
		spec, policy, err := failureFlags(c.onFailure, c.policy)
		if err != nil {
			t.Errorf("failureFlags(%q, %q): %v", c.onFailure, c.policy, err)
			continue
		}
		got := ""
		if spec != nil {
			got = spec.String()
		}
		if got != c.spec || policy != c.want {
			t.Errorf("failureFlags(%q, %q) = %q, %q; want %q, %q", c.onFailure, c.policy, got, policy, c.spec, c.want)
		}
	}
}

// TestOnFailureDir: --on-failure dir:PATH makes the node's DeadLetter write
// a dead-lettered batch's records to PATH (no AWS call).
func TestOnFailureDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "failed")
	spec, policy, err := failureFlags("dir:"+dir, "")
	if err != nil {
		t.Fatal(err)
	}
	cfg := kinactor.Config{StreamName: "s", FailurePolicy: policy}
	if err := setOnFailure(context.Background(), &cfg, *spec, aws.Config{}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if cfg.DeadLetter == nil || cfg.FailurePolicy != kinactor.PolicyDeadLetter {
		t.Fatalf("DeadLetter set %v, policy %q", cfg.DeadLetter != nil, cfg.FailurePolicy)
	}
	batch := messages.Batch{ShardID: "shardId-000000000000", Attempt: 5, Records: []messages.Record{
		{SequenceNumber: "1", PartitionKey: "a", Data: []byte("x")}, {SequenceNumber: "2", PartitionKey: "b"}, {SequenceNumber: "3", PartitionKey: "a"},
	}}
	if err := cfg.DeadLetter(context.Background(), batch.ShardID, batch, errors.New("poison")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "shardId-000000000000.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3:\n%s", len(lines), b)
	}
	for i, l := range lines {
		var e kinactor.FailureEntry
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatal(err)
		}
		if e.Stream != "s" || e.SequenceNumber != batch.Records[i].SequenceNumber || e.Error != "poison" || e.Attempts != 5 {
			t.Errorf("line %d: %+v", i, e)
		}
	}
}
