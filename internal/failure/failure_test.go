package failure

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kinactor/kinactor/internal/backoff"
	"github.com/kinactor/kinactor/messages"
)

func TestParseSpec(t *testing.T) {
	for _, c := range []struct {
		spec string
		want Spec
	}{
		{"dir:/var/lib/failed", Spec{KindDir, "/var/lib/failed"}},
		{"dir:rel/dir:with:colons", Spec{KindDir, "rel/dir:with:colons"}},
		{"kinesis:orders-dlq", Spec{KindKinesis, "orders-dlq"}},
		{"dynamodb:orders.failed_1", Spec{KindDynamoDB, "orders.failed_1"}},
	} {
		got, err := ParseSpec(c.spec)
		if err != nil || got != c.want {
			t.Errorf("ParseSpec(%q) = %+v, %v; want %+v", c.spec, got, err, c.want)
		}
		if got.String() != c.spec {
			t.Errorf("%+v.String() = %q, want %q", got, got.String(), c.spec)
		}
	}
	for _, c := range []struct{ spec, want string }{
		{"s3:x", `"s3:x": unknown kind "s3" (want dir:PATH, kinesis:STREAM or dynamodb:TABLE)`},
		{"", `"": no kind (want dir:PATH`},
		{"/tmp/x", `"/tmp/x": no kind (want dir:PATH`},
		{"dir:", `"dir:": empty PATH`},
		{"kinesis:", `"kinesis:": invalid stream name ""`},
		{"kinesis:a/b", `"kinesis:a/b": invalid stream name "a/b"`},
		{"kinesis:" + strings.Repeat("s", 129), `invalid stream name`},
		{"dynamodb:ab", `"dynamodb:ab": invalid table name "ab" (3-255`},
		{"dynamodb:a b c", `"dynamodb:a b c": invalid table name`},
		{"DIR:/x", `unknown kind "DIR"`},
	} {
		_, err := ParseSpec(c.spec)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseSpec(%q) error = %v, want it to contain %s", c.spec, err, c.want)
		}
	}
}

func entry(shard, seq string, sub int64, pk, data string) Entry {
	var b []byte
	if data != "" {
		b = []byte(data)
	}
	return Entry{
		Stream: "orders", Shard: shard, SequenceNumber: seq, SubSequenceNumber: sub, PartitionKey: pk,
		ArrivalTime: time.Date(2026, 5, 1, 12, 0, 0, 123456789, time.UTC), Data: b,
		Error: "poison", Attempts: 5, FailedAt: time.Date(2026, 5, 1, 12, 0, 9, 5e8, time.UTC),
	}
}

// readJSONL reads a file of entries.
func readJSONL(t *testing.T, path string) []Entry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []Entry
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		var e Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("%s: line %q: %v", path, sc.Text(), err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestEntryJSONForm(t *testing.T) {
	b, err := json.Marshal(entry("shardId-000000000001", "4959", 2, "k7", `{"n":1}`))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"stream":"orders","shard":"shardId-000000000001","seq":"4959","sub":2,"pk":"k7","arrival":"2026-05-01T12:00:00.123456789Z","data":"eyJuIjoxfQ==","error":"poison","attempts":5,"failed_at":"2026-05-01T12:00:09.5Z"}`
	if string(b) != want {
		t.Fatalf("JSON form\n got %s\nwant %s", b, want)
	}
	b, _ = json.Marshal(Entry{Shard: "s", SequenceNumber: "1"})
	if strings.Contains(string(b), `"stream"`) || strings.Contains(string(b), `"data"`) {
		t.Fatalf("empty stream and data not omitted: %s", b)
	}
}

func TestDirRoundTripOneFilePerShard(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "failed") // created by Write
	d := NewDir(path)
	var mu sync.Mutex
	synced := map[string]int{}
	d.syncFile = func(f *os.File) error {
		mu.Lock()
		synced[filepath.Base(f.Name())]++
		mu.Unlock()
		return f.Sync()
	}
	a1, b1, a2 := entry("shardId-000000000001", "100", 0, "k1", "one"), entry("shardId-000000000002", "200", 0, "k2", "\x00\xffbinary"), entry("shardId-000000000001", "101", 3, "k1", "")
	ctx := context.Background()
	if err := d.Write(ctx, []Entry{a1, b1, a2}); err != nil {
		t.Fatal(err)
	}
	a3 := entry("shardId-000000000001", "102", 0, "k3", "three")
	if err := d.Write(ctx, []Entry{a3}); err != nil {
		t.Fatal(err)
	}
	names, _ := os.ReadDir(path)
	if len(names) != 2 {
		t.Fatalf("files %v, want one per shard", names)
	}
	if got, want := readJSONL(t, filepath.Join(path, "shardId-000000000001.jsonl")), []Entry{a1, a2, a3}; !reflect.DeepEqual(got, want) {
		t.Fatalf("shard 1 entries\n got %+v\nwant %+v", got, want)
	}
	if got, want := readJSONL(t, filepath.Join(path, "shardId-000000000002.jsonl")), []Entry{b1}; !reflect.DeepEqual(got, want) {
		t.Fatalf("shard 2 entries\n got %+v\nwant %+v", got, want)
	}
	// Each file fsynced at each Write that touched it, the directory once
	// per Write that created a file.
	if synced["shardId-000000000001.jsonl"] != 2 || synced["shardId-000000000002.jsonl"] != 1 || synced["failed"] != 1 {
		t.Fatalf("fsyncs %v", synced)
	}
	if got := FileName("a/../b c"); got != "a_.._b_c.jsonl" {
		t.Fatalf("FileName = %q", got)
	}
}

func TestDirFailedSyncLeavesNoPartialLine(t *testing.T) {
	path := t.TempDir()
	d := NewDir(path)
	e1, e2 := entry("s1", "1", 0, "k", "a"), entry("s1", "2", 0, "k", "b")
	if err := d.Write(context.Background(), []Entry{e1}); err != nil {
		t.Fatal(err)
	}
	d.syncFile = func(*os.File) error { return errors.New("disk on fire") }
	if err := d.Write(context.Background(), []Entry{e2}); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("Write with a failing fsync = %v", err)
	}
	if got := readJSONL(t, filepath.Join(path, "s1.jsonl")); !reflect.DeepEqual(got, []Entry{e1}) {
		t.Fatalf("after a failed append the file holds %+v, want only the first entry", got)
	}
}

// unwritableDir returns a directory path Write cannot write to: a
// read-only directory, or (as root, who writes anywhere) a path below a
// regular file.
func unwritableDir(t *testing.T) string {
	t.Helper()
	base := t.TempDir()
	if os.Geteuid() == 0 {
		file := filepath.Join(base, "file")
		if err := os.WriteFile(file, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		return filepath.Join(file, "failed")
	}
	dir := filepath.Join(base, "ro")
	if err := os.Mkdir(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
	return dir
}

// counting counts Write calls.
type counting struct {
	Destination
	mu    sync.Mutex
	calls int
}

func (c *counting) Write(ctx context.Context, entries []Entry) error {
	c.mu.Lock()
	c.calls++
	c.mu.Unlock()
	return c.Destination.Write(ctx, entries)
}

func TestDirUnwritableRetryUntilContextEnds(t *testing.T) {
	d := NewDir(unwritableDir(t))
	if err := d.Write(context.Background(), []Entry{entry("s1", "1", 0, "k", "a")}); err == nil {
		t.Fatal("Write to an unwritable directory succeeded")
	}
	c := &counting{Destination: d}
	var failures []int
	r := Retry(c, backoff.Policy{Base: time.Millisecond, Cap: 5 * time.Millisecond}, func(n int, err error) { failures = append(failures, n) })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := r.Write(ctx, []Entry{entry("s1", "1", 0, "k", "a")})
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Retry.Write = %v, want an error with the context's", err)
	}
	if c.calls < 5 || len(failures) != c.calls {
		t.Fatalf("%d calls, %d failures reported: want retries until the context ended", c.calls, len(failures))
	}
}

// flaky fails its first n writes, then keeps what it is given.
type flaky struct {
	mu      sync.Mutex
	fail    int
	written []Entry
}

func (f *flaky) Write(_ context.Context, entries []Entry) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail > 0 {
		f.fail--
		return errors.New("unavailable")
	}
	f.written = append(f.written, entries...)
	return nil
}

func TestRetrySucceedsAfterFailures(t *testing.T) {
	f := &flaky{fail: 3}
	r := Retry(f, backoff.Policy{Base: time.Millisecond, Cap: 2 * time.Millisecond}, nil)
	e := []Entry{entry("s", "1", 0, "k", "a")}
	if err := r.Write(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.written, e) || f.fail != 0 {
		t.Fatalf("written %+v", f.written)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Write(ctx, e); !errors.Is(err, context.Canceled) {
		t.Fatalf("Write on an ended context = %v", err)
	}
}

func TestDeadLetterWritesEveryRecord(t *testing.T) {
	f := &flaky{}
	dl := DeadLetter(f, "orders")
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	batch := messages.Batch{ShardID: "shardId-000000000003", BatchID: 9, Attempt: 5, Records: []messages.Record{
		{SequenceNumber: "10", PartitionKey: "a", Data: []byte("x"), ApproximateArrivalTimestamp: at},
		{SequenceNumber: "11", SubSequenceNumber: 1, PartitionKey: "b", Data: []byte("y"), ApproximateArrivalTimestamp: at.Add(time.Second)},
		{SequenceNumber: "11", SubSequenceNumber: 2, PartitionKey: "b", ApproximateArrivalTimestamp: at.Add(time.Second)},
	}}
	before := time.Now()
	if err := dl(context.Background(), "shardId-000000000003", batch, errors.New("poison pill")); err != nil {
		t.Fatal(err)
	}
	if len(f.written) != 3 {
		t.Fatalf("%d entries written, want 3", len(f.written))
	}
	for i, e := range f.written {
		r := batch.Records[i]
		want := Entry{Stream: "orders", Shard: "shardId-000000000003", SequenceNumber: r.SequenceNumber, SubSequenceNumber: r.SubSequenceNumber,
			PartitionKey: r.PartitionKey, ArrivalTime: r.ApproximateArrivalTimestamp, Data: r.Data, Error: "poison pill", Attempts: 5, FailedAt: e.FailedAt}
		if !reflect.DeepEqual(e, want) {
			t.Errorf("entry %d = %+v, want %+v", i, e, want)
		}
		if e.FailedAt.Before(before) || e.FailedAt.After(time.Now()) {
			t.Errorf("entry %d FailedAt %v not the time of the call", i, e.FailedAt)
		}
	}
	// The destination's error is the handler's: the batch is not checkpointed.
	f.fail = 1
	if err := dl(context.Background(), "shardId-000000000003", batch, errors.New("poison pill")); err == nil {
		t.Fatal("a failed destination write returned nil")
	}
	if err := dl(context.Background(), "s", messages.Batch{}, errors.New("x")); err != nil {
		t.Fatalf("empty batch: %v", err)
	}
}
