// Package ledger is a processor that records every record it processes, for
// tests, the demo and chaos runs: a node's Writer appends one JSON line per
// record to <dir>/<node>.jsonl and fsyncs the file before the batch is
// acknowledged, so every checkpointed record is on disk. ReadDir reads the
// ledgers of all nodes back.
//
// Knobs (ProcessorWith; kinactor node --fail-keys, --fail-mode,
// --record-delay) make records of chosen keys fail, and the sink slow, for
// tests and demos of the failure features:
//
//   - --fail-keys k1,k2: every record whose partition key is k1 or k2
//     fails. The batch is answered as a partial batch failure
//     (actors.FailRecords, which becomes Result.Failed) naming every failing
//     record of the batch, and only the records before the first failing
//     one, in batch order, are appended: the pipeline counts those as
//     processed and delivers the failing record and every record after it
//     again, so appending the later ones now would append them twice. A
//     batch whose first record fails appends nothing. A failing key fails
//     at every delivery, so after --max-attempts its records are left to
//     --failure-policy (dead-lettered, retried for ever, or the shard
//     stopped) and never appended.
//   - --fail-mode batch: the same records fail the whole batch with an
//     error (ErrFailKey) instead, nothing appended: what --bisect-on-error
//     splits to isolate them.
//   - --record-delay D: a batch sleeps D for each record it appends, before
//     appending them (a slow sink); a batch whose context ends meanwhile
//     fails with the context's error, nothing appended.
//
// One Writer serves every shard, and every worker of a shard
// (Config.ParallelizationFactor): its appends are serialised, each batch
// one write of whole lines.
//
// A line is
//
//	{"node":"n1","shard":"shardId-000000000001","seq":"4959...","sub":0,"ts":1764127283123,"pk":"k7","data":{"pk":"k7","n":12}}
//
// where ts is the processing time: unix milliseconds when the batch was
// appended, the same for every record of one batch,
// and data is the record's payload itself, compacted to one line, when the
// payload is valid JSON. Otherwise data is absent and "b64" holds the payload
// in standard base64 (with padding); an empty payload has neither:
//
//	{"node":"n1","shard":"shardId-000000000001","seq":"4959...","sub":0,"ts":1764127283123,"pk":"k7","b64":"AAEC"}
package ledger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/messages"
)

// Entry is one ledger line.
type Entry struct {
	Node string `json:"node"`
	// Stream is set in a multi-stream application (shard ids repeat
	// across streams).
	Stream string `json:"stream,omitempty"`
	Shard  string `json:"shard"`
	Seq    string `json:"seq"`
	Sub    int64  `json:"sub"`
	// TS is when the batch was appended, in unix milliseconds; the same
	// for every record of one batch.
	TS int64  `json:"ts"`
	PK string `json:"pk"`
	// Data is the payload when it is valid JSON (compacted), else nil.
	Data json.RawMessage `json:"data,omitempty"`
	// B64 is the payload when it is not valid JSON (base64 in the file),
	// else nil. Both are nil for an empty payload.
	B64 []byte `json:"b64,omitempty"`
}

// Payload returns the record's data: Data when set, else B64.
func (e Entry) Payload() []byte {
	if e.Data != nil {
		return e.Data
	}
	return e.B64
}

// Writer appends a node's ledger. One Writer serves every shard of the node;
// its methods may be called concurrently.
type Writer struct {
	node  string
	path  string
	multi bool // write each record's stream (SetMultiStream)

	mu     sync.Mutex
	f      *os.File
	size   int64 // bytes of complete lines in the file
	closed bool
}

// NewWriter opens (creating it if missing) <dir>/<node>.jsonl for appending.
// A torn last line left by a killed process is cut off first, so that new
// lines never follow a partial one.
func NewWriter(dir, node string) (*Writer, error) {
	if node == "" || strings.ContainsAny(node, `/\`) || node == "." || node == ".." {
		return nil, fmt.Errorf("ledger: invalid node name %q (it names the file)", node)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	path := filepath.Join(dir, node+".jsonl")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	size, err := completeLength(f)
	if err == nil {
		var st os.FileInfo
		if st, err = f.Stat(); err == nil && st.Size() != size {
			if err = f.Truncate(size); err == nil {
				err = f.Sync()
			}
		}
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("ledger: opening %s: %w", path, err)
	}
	return &Writer{node: node, path: path, f: f, size: size}, nil
}

// completeLength returns the length of f up to and including its last '\n'.
func completeLength(f *os.File) (int64, error) {
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<62))
	if err != nil {
		return 0, err
	}
	return int64(bytes.LastIndexByte(b, '\n') + 1), nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// SetMultiStream makes every line carry its record's stream (a
// multi-stream application: shard ids repeat across streams). Call it
// before the first Append.
func (w *Writer) SetMultiStream() { w.multi = true }

func (w *Writer) streamOf(b messages.Batch) string {
	if w.multi {
		return b.Stream
	}
	return ""
}

// Path is the ledger file's path.
func (w *Writer) Path() string { return w.path }

// Append writes one line per record of batch in a single write and fsyncs
// the file. On error nothing of the batch remains in the file (best
// effort: the file is truncated back to its previous length).
func (w *Writer) Append(batch messages.Batch) error {
	if len(batch.Records) == 0 {
		return nil
	}
	var buf bytes.Buffer
	ts := time.Now().UnixMilli()
	for _, r := range batch.Records {
		e := Entry{Node: w.node, Stream: w.streamOf(batch), Shard: batch.ShardID, Seq: r.SequenceNumber, Sub: r.SubSequenceNumber, TS: ts, PK: r.PartitionKey}
		var compact bytes.Buffer
		if json.Valid(r.Data) && json.Compact(&compact, r.Data) == nil {
			e.Data = compact.Bytes()
		} else {
			e.B64 = r.Data
		}
		line, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("ledger: encoding %s/%s: %w", batch.ShardID, r.SequenceNumber, err)
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return errors.New("ledger: writer closed")
	}
	n, err := w.f.Write(buf.Bytes())
	if err == nil {
		err = w.f.Sync()
	}
	if err != nil {
		if n > 0 {
			_ = w.f.Truncate(w.size)
		}
		return fmt.Errorf("ledger: writing %s: %w", w.path, err)
	}
	w.size += int64(n)
	return nil
}

// Processor returns the function processor: it appends each batch and
// acknowledges it (returns nil) only once the lines are fsynced.
func (w *Writer) Processor() actors.ProcessorFunc {
	return func(_ context.Context, batch messages.Batch) error { return w.Append(batch) }
}

// Knobs are the ledger processor's test knobs, for demos and black-box
// tests of the failure features (kinactor node --fail-keys, --fail-mode,
// --record-delay).
type Knobs struct {
	// FailKeys: every record with one of these partition keys fails. The
	// records of the batch before the first failing one are appended; the
	// batch is answered as a partial failure naming every failing record
	// (actors.FailRecords), or, with FailWhole, with an error for the whole
	// batch (what BisectOnError splits).
	FailKeys  map[string]bool
	FailWhole bool
	// RecordDelay is slept before each record is appended (a slow sink);
	// a batch whose context ends meanwhile fails with the context's error.
	RecordDelay time.Duration
}

// ErrFailKey is the error of a batch failed whole by Knobs.FailKeys.
var ErrFailKey = errors.New("ledger: a record of a failing key (--fail-keys)")

// ProcessorWith returns the function processor with test knobs. It may be
// called concurrently (Config.ParallelizationFactor): the Writer is.
func (w *Writer) ProcessorWith(k Knobs) actors.ProcessorFunc {
	if len(k.FailKeys) == 0 && k.RecordDelay <= 0 {
		return w.Processor()
	}
	return func(ctx context.Context, batch messages.Batch) error {
		var failed []messages.Position
		ok := len(batch.Records)
		for i, r := range batch.Records {
			if k.FailKeys[r.PartitionKey] {
				if len(failed) == 0 {
					ok = i
				}
				failed = append(failed, r.Pos())
			}
		}
		if k.FailWhole && len(failed) > 0 {
			return fmt.Errorf("%w: %s (key %q)", ErrFailKey, failed[0], batch.Records[ok].PartitionKey)
		}
		if k.RecordDelay > 0 {
			t := time.NewTimer(k.RecordDelay * time.Duration(ok))
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		head := batch
		head.Records = batch.Records[:ok]
		if err := w.Append(head); err != nil {
			return err
		}
		if len(failed) > 0 {
			return actors.FailRecords(failed...)
		}
		return nil
	}
}

// Close syncs and closes the file. Later Appends fail.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	err := w.f.Sync()
	return errors.Join(err, w.f.Close())
}

// ReadDir reads every *.jsonl file in dir (sorted by name, lines in file
// order). An unparsable last line (torn by a kill) is skipped; an
// unparsable line anywhere else is an error naming the file and line.
func ReadDir(dir string) ([]Entry, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	sort.Strings(paths)
	var all []Entry
	for _, p := range paths {
		es, err := ReadFile(p)
		if err != nil {
			return nil, err
		}
		all = append(all, es...)
	}
	return all, nil
}

// ReadFile reads one ledger file, with ReadDir's rules.
func ReadFile(path string) ([]Entry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	lines := bytes.Split(b, []byte{'\n'})
	if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1] // the file ends with '\n'
	}
	var es []Entry
	for i, l := range lines {
		var e Entry
		if err := json.Unmarshal(l, &e); err != nil || e.Seq == "" {
			if i == len(lines)-1 {
				break // torn last line
			}
			if err == nil {
				err = errors.New("no seq")
			}
			return nil, fmt.Errorf("ledger: %s line %d: %w", path, i+1, err)
		}
		es = append(es, e)
	}
	return es, nil
}
