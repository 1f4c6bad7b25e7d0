package kinactor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kinactor/kinactor/messages"
)

func TestDeadLetterToDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "failed")
	dl := DeadLetterTo(FailureDir(dir), "orders", nil)
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	batch := messages.Batch{ShardID: "shardId-000000000001", BatchID: 3, Attempt: 5, Records: []messages.Record{
		{SequenceNumber: "100", PartitionKey: "a", Data: []byte(`{"n":1}`), ApproximateArrivalTimestamp: at},
		{SequenceNumber: "101", SubSequenceNumber: 1, PartitionKey: "b", Data: []byte{0, 1, 2}, ApproximateArrivalTimestamp: at},
		{SequenceNumber: "102", PartitionKey: "a", Data: []byte("x"), ApproximateArrivalTimestamp: at},
	}}
	if err := dl(context.Background(), batch.ShardID, batch, errors.New("poison")); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "shardId-000000000001.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got []FailureEntry
	for sc := bufio.NewScanner(f); sc.Scan(); {
		var e FailureEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		got = append(got, e)
	}
	if len(got) != 3 {
		t.Fatalf("%d entries, want 3", len(got))
	}
	for i, e := range got {
		r := batch.Records[i]
		if e.Stream != "orders" || e.Shard != batch.ShardID || e.SequenceNumber != r.SequenceNumber || e.SubSequenceNumber != r.SubSequenceNumber ||
			e.PartitionKey != r.PartitionKey || string(e.Data) != string(r.Data) || !e.ArrivalTime.Equal(at) || e.Error != "poison" || e.Attempts != 5 || e.FailedAt.IsZero() {
			t.Errorf("entry %d = %+v", i, e)
		}
	}
}

// failing fails every write.
type failing struct {
	mu    sync.Mutex
	calls int
}

func (f *failing) Write(context.Context, []FailureEntry) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return errors.New("destination down")
}

func TestDeadLetterToRetriesUntilContextEnds(t *testing.T) {
	f := &failing{}
	dl := DeadLetterTo(f, "orders", slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	batch := messages.Batch{ShardID: "s", Attempt: 1, Records: []messages.Record{{SequenceNumber: "1", PartitionKey: "k"}}}
	err := dl(ctx, "s", batch, errors.New("poison"))
	if err == nil || !strings.Contains(err.Error(), "destination down") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("DeadLetterTo with a failing destination = %v", err)
	}
	if f.calls < 2 {
		t.Fatalf("%d writes, want retries until the context ended", f.calls)
	}
}
