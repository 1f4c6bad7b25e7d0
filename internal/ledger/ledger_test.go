package ledger

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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
