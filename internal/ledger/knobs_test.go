package ledger

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/messages"
)

func knobBatch(keys ...string) messages.Batch {
	b := messages.Batch{ShardID: "shardId-000000000001", BatchID: 1}
	for i, k := range keys {
		b.Records = append(b.Records, messages.Record{SequenceNumber: fmt.Sprintf("%056d", i+1), PartitionKey: k, Data: []byte(`{}`)})
	}
	return b
}

// --fail-keys: the records before the first failing one are appended, and
// the batch is a partial failure naming every failing record; with
// FailWhole, an error and nothing appended.
func TestFailKeys(t *testing.T) {
	cases := []struct {
		name     string
		keys     []string
		whole    bool
		appended int
		failed   []int // indexes named
		errWhole bool
	}{
		{"third fails", []string{"a", "b", "x", "c", "x"}, false, 2, []int{2, 4}, false},
		{"first fails", []string{"x", "a"}, false, 0, []int{0}, false},
		{"none fails", []string{"a", "b"}, false, 2, nil, false},
		{"whole batch", []string{"a", "x"}, true, 0, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			w, err := NewWriter(dir, "n1")
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			b := knobBatch(c.keys...)
			err = w.ProcessorWith(Knobs{FailKeys: map[string]bool{"x": true}, FailWhole: c.whole})(context.Background(), b)
			var items *actors.BatchItemFailures
			switch {
			case c.errWhole:
				if !errors.Is(err, ErrFailKey) {
					t.Fatalf("err %v, want ErrFailKey", err)
				}
			case c.failed == nil:
				if err != nil {
					t.Fatal(err)
				}
			default:
				if !errors.As(err, &items) || len(items.Records) != len(c.failed) {
					t.Fatalf("err %v, want FailRecords of %d records", err, len(c.failed))
				}
				for i, j := range c.failed {
					if items.Records[i] != b.Records[j].Pos() {
						t.Fatalf("named %v, want record %d", items.Records[i], j)
					}
				}
			}
			es, err := ReadFile(w.Path())
			if err != nil {
				t.Fatal(err)
			}
			if len(es) != c.appended {
				t.Fatalf("%d lines appended, want %d", len(es), c.appended)
			}
		})
	}
}

// --record-delay: the batch's context ending during the delay fails it
// with the context's error, and nothing is appended.
func TestRecordDelayHonoursTheContext(t *testing.T) {
	w, err := NewWriter(t.TempDir(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err = w.ProcessorWith(Knobs{RecordDelay: time.Hour})(ctx, knobBatch("a"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want the context's deadline", err)
	}
	if es, _ := ReadFile(w.Path()); len(es) != 0 {
		t.Fatalf("%d lines appended", len(es))
	}
	if err := w.ProcessorWith(Knobs{RecordDelay: time.Millisecond})(context.Background(), knobBatch("a", "b")); err != nil {
		t.Fatal(err)
	}
	if es, _ := ReadFile(w.Path()); len(es) != 2 {
		t.Fatalf("%d lines appended, want 2", len(es))
	}
}

// Workers of one shard append at once (ParallelizationFactor): every line
// is whole.
func TestConcurrentWorkersOfOneShard(t *testing.T) {
	w, err := NewWriter(t.TempDir(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	fn := w.ProcessorWith(Knobs{RecordDelay: time.Microsecond})
	done := make(chan error, 4)
	for g := range 4 {
		go func() {
			for i := range 50 {
				b := messages.Batch{ShardID: "shardId-000000000001", Records: []messages.Record{{SequenceNumber: fmt.Sprintf("%d%03d", g+1, i), PartitionKey: fmt.Sprint("k", g), Data: []byte(`{"n":1}`)}}}
				if err := fn(context.Background(), b); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	es, err := ReadFile(w.Path())
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 200 {
		t.Fatalf("%d lines, want 200", len(es))
	}
}
