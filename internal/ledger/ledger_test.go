package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/messages"
)

func batch(shard string, from, n int) messages.Batch {
	b := messages.Batch{ShardID: shard}
	for i := from; i < from+n; i++ {
		b.Records = append(b.Records, messages.Record{
			SequenceNumber: fmt.Sprintf("%06d", i),
			PartitionKey:   fmt.Sprintf("k%d", i%3),
			Data:           fmt.Appendf(nil, "{ \"pk\": \"k%d\",\n \"n\": %d }", i%3, i),
		})
	}
	return b
}

func TestWriteReadBack(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(dir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().UnixMilli()
	fn := w.Processor()
	var wg sync.WaitGroup
	for s := 0; s < 4; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; b < 10; b++ {
				if err := fn(context.Background(), batch(fmt.Sprintf("shard-%d", s), b*5, 5)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	binary := messages.Batch{ShardID: "shard-b", Records: []messages.Record{
		{SequenceNumber: "1", SubSequenceNumber: 3, PartitionKey: "x", Data: []byte{0, 1, 2, 0xff}},
		{SequenceNumber: "2", PartitionKey: "y", Data: nil},
	}}
	if err := fn(context.Background(), binary); err != nil {
		t.Fatal(err)
	}
	if err := fn(context.Background(), messages.Batch{ShardID: "empty"}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := fn(context.Background(), batch("s", 0, 1)); err == nil {
		t.Fatal("append after Close succeeded")
	}
	es, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 4*50+2 {
		t.Fatalf("read %d entries, want %d", len(es), 4*50+2)
	}
	after := time.Now().UnixMilli()
	batchTS := map[string]int64{} // "shard/batch" → ts: one per batch
	next := map[string]int{}
	for _, e := range es {
		if e.TS < before || e.TS > after {
			t.Fatalf("ts %d outside [%d, %d]", e.TS, before, after)
		}
		if e.Node != "n1" {
			t.Fatalf("node %q", e.Node)
		}
		if e.Shard == "shard-b" {
			continue
		}
		i := next[e.Shard]
		if want := fmt.Sprintf("%06d", i); e.Seq != want {
			t.Fatalf("%s: seq %s, want %s (per-shard order)", e.Shard, e.Seq, want)
		}
		if want := fmt.Sprintf(`{"pk":"k%d","n":%d}`, i%3, i); string(e.Data) != want || e.B64 != nil {
			t.Fatalf("data %s, want %s", e.Data, want)
		}
		key := fmt.Sprintf("%s/%d", e.Shard, i/5)
		if ts, ok := batchTS[key]; ok && ts != e.TS {
			t.Fatalf("%s: ts %d and %d within one batch", key, ts, e.TS)
		}
		batchTS[key] = e.TS
		next[e.Shard]++
	}
	b1, b2 := es[len(es)-2], es[len(es)-1]
	if b1.Data != nil || string(b1.Payload()) != "\x00\x01\x02\xff" || b1.Sub != 3 || b1.PK != "x" {
		t.Fatalf("binary entry %+v", b1)
	}
	if b2.Data != nil || b2.B64 != nil || len(b2.Payload()) != 0 {
		t.Fatalf("empty-payload entry %+v", b2)
	}
	if b1.TS != b2.TS {
		t.Fatalf("one batch, two ts: %d and %d", b1.TS, b2.TS)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "n1.jsonl"))
	if !strings.Contains(string(raw), fmt.Sprintf(`"sub":3,"ts":%d,"pk":"x"`, b1.TS)) {
		t.Fatalf("no ts field in file:\n%s", raw[len(raw)-200:])
	}
	if !strings.Contains(string(raw), `"b64":"AAEC/w=="`) {
		t.Fatalf("binary payload not base64 in file:\n%s", raw[len(raw)-200:])
	}
}

func TestTornLastLine(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(dir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Append(batch("s", 0, 3)); err != nil {
		t.Fatal(err)
	}
	w.Close()
	// A kill in the middle of a write leaves a partial line.
	f, err := os.OpenFile(w.Path(), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"node":"n1","shard":"s","seq":"0000`)
	f.Close()
	// Another node's ledger, complete.
	w2, _ := NewWriter(dir, "n2")
	w2.Append(batch("t", 0, 2))
	w2.Close()

	es, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 5 {
		t.Fatalf("read %d entries, want 5 (torn line skipped)", len(es))
	}
	// Reopening cuts the torn line so that new lines follow whole ones.
	w, err = NewWriter(dir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Append(batch("s", 3, 2)); err != nil {
		t.Fatal(err)
	}
	w.Close()
	es, err = ReadFile(w.Path())
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 5 || es[4].Seq != "000004" {
		t.Fatalf("after reopen: %d entries, last %+v", len(es), es[len(es)-1])
	}

	// A bad line in the middle is an error.
	raw, _ := os.ReadFile(w.Path())
	lines := strings.SplitAfter(string(raw), "\n")
	lines[2] = "garbage\n"
	os.WriteFile(w.Path(), []byte(strings.Join(lines, "")), 0o644)
	if _, err := ReadDir(dir); err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("ReadDir with a bad middle line: %v, want an error naming line 3", err)
	}
}

func TestBadNodeName(t *testing.T) {
	for _, n := range []string{"", "a/b", ".."} {
		if _, err := NewWriter(t.TempDir(), n); err == nil {
			t.Errorf("NewWriter(%q) succeeded", n)
		}
	}
}

// TestKnobsWorkersOfOneShardLinesIntact: four workers of one shard
// (ParallelizationFactor 4) append through one knobbed processor at once,
// each batch ending with a record of a failing key: every line in the
// file, the last one too, is whole JSON, every record before a failing one
// is there exactly once with its own key and payload, and no failing
// record is.
func TestKnobsWorkersOfOneShardLinesIntact(t *testing.T) {
	w, err := NewWriter(t.TempDir(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	fn := w.ProcessorWith(Knobs{FailKeys: map[string]bool{"bad": true}, RecordDelay: time.Microsecond})
	pad := strings.Repeat("p", 4096) // long lines: torn or interleaved writes would show
	const workers, batches = 4, 25
	var wg sync.WaitGroup
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprint("k", g)
			for i := range batches {
				b := messages.Batch{ShardID: "shardId-000000000001"}
				for j := range 3 {
					b.Records = append(b.Records, messages.Record{SequenceNumber: fmt.Sprintf("%d%03d%d", g+1, i, j), PartitionKey: key,
						Data: fmt.Appendf(nil, `{"k":%q,"i":%d,"j":%d,"pad":%q}`, key, i, j, pad)})
				}
				b.Records = append(b.Records, messages.Record{SequenceNumber: fmt.Sprintf("%d%03d9", g+1, i), PartitionKey: "bad", Data: []byte(`{}`)})
				err := fn(context.Background(), b)
				var items *actors.BatchItemFailures
				if !errors.As(err, &items) || len(items.Records) != 1 || items.Records[0] != b.Records[3].Pos() {
					t.Errorf("worker %d batch %d: %v, want the failing record named", g, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	raw, err := os.ReadFile(w.Path())
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) == 0 || raw[len(raw)-1] != '\n' {
		t.Fatal("the file does not end with a whole line")
	}
	seen := map[string]bool{}
	for n, l := range strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n") {
		var e Entry
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("line %d is not whole JSON: %v", n+1, err)
		}
		var d struct {
			K    string
			I, J int
			Pad  string
		}
		if err := json.Unmarshal(e.Data, &d); err != nil || d.K != e.PK || d.Pad != pad || e.PK == "bad" {
			t.Fatalf("line %d: entry %s/%s key %q, payload %.60s (%v)", n+1, e.Shard, e.Seq, e.PK, e.Data, err)
		}
		if want := fmt.Sprintf("%c%03d%d", e.PK[1]+1, d.I, d.J); e.Seq != want || seen[e.Seq] {
			t.Fatalf("line %d: seq %s (want %s), seen before %v", n+1, e.Seq, want, seen[e.Seq])
		}
		seen[e.Seq] = true
	}
	if len(seen) != workers*batches*3 {
		t.Fatalf("%d records appended, want %d", len(seen), workers*batches*3)
	}
}
