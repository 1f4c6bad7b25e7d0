package actors

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"

	"github.com/kinactor/kinactor/messages"
)

// Per-key parallelism (Config.ParallelizationFactor, told to the processor
// in messages.Initialized.Workers): the adapter of FromProcessor runs N
// Processor values, the workers of one shard, each given the records of
// its own partition keys (WorkerOf), so every key keeps its order. A batch
// is split among the workers, which run at once, and answered when all
// have returned. The pure part, fanout, decides what each worker gets and
// what the batch's answer is; the adapter only runs the calls.
//
// Checkpoints: a worker's Result.Checkpoint covers only its own records,
// cumulatively, as a Kinesis checkpoint does (CheckpointBatchEnd: all of
// them so far; CheckpointAt(p): those at or before p; zero: nothing new).
// The batch's checkpoint is the last record delivered before the earliest
// record that some worker has not covered: never ahead of one.
//
// Failures: a worker that names records in Result.Failed has failed at the
// first of them; one that returns an error (or panics), at its first record.
// The batch's failure point F is the earliest of these. When F is known to
// be a failed record (named, or the only record of its worker's part), the
// answer is Processed.Failed, F first, then the other workers' failure
// points: the shard takes the records before F as processed and
// checkpoints them (a worker that names records lets its own records
// before them be checkpointed, as a single value does). When F is not
// known (an error of a worker that had several records: any of them may
// be the culprit), the answer is Processed.Err, for the whole batch, so
// that the shard retries or bisects it; naming F would have the shard count
// the failure against F alone and, once its attempts are used up, give up
// on F, which may be innocent. The answer is Processed.Err too when a
// record before F is held (processed, not covered by its worker's
// checkpoints): the shard's checkpoint before F would be ahead of it.
// Either way the records that succeeded are remembered (until a delivery
// starts after them), and a delivery that holds them again does not give
// them to a worker again: no duplicates while the adapter lives. A panic
// restarts the adapter with fresh values and forgets.

// WorkerOf returns the worker, of n, of a partition key: FNV-1a (32 bits)
// of the key, modulo n. The same on every node and in every version.
func WorkerOf(partitionKey string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(partitionKey))
	return int(h.Sum32() % uint32(n))
}

// comparePos orders positions as Kinesis does: sequence numbers as
// decimal integers, then sub-sequence numbers.
func comparePos(a, b messages.Position) int {
	switch {
	case len(a.SequenceNumber) != len(b.SequenceNumber):
		if len(a.SequenceNumber) < len(b.SequenceNumber) {
			return -1
		}
		return 1
	case a.SequenceNumber != b.SequenceNumber:
		if a.SequenceNumber < b.SequenceNumber {
			return -1
		}
		return 1
	case a.SubSequenceNumber != b.SubSequenceNumber:
		if a.SubSequenceNumber < b.SubSequenceNumber {
			return -1
		}
		return 1
	}
	return 0
}

// fanout is the state of the workers of one shard.
type fanout struct {
	n         int
	uncovered [][]messages.Position // per worker: delivered, not yet covered by its checkpoints, in order
	order     []posWorker           // delivered records after the last covered prefix, in order
	covered   messages.Position     // the last record of the covered prefix ("" none)
	reported  messages.Position     // the last checkpoint answered
	done      map[messages.Position]bool
	acked     []messages.Position // per worker: its last record acknowledged (processed)
}

type posWorker struct {
	pos    messages.Position
	worker int
}

func newFanout(n int) *fanout {
	return &fanout{n: n, uncovered: make([][]messages.Position, n), done: map[messages.Position]bool{}, acked: make([]messages.Position, n)}
}

// split returns the records of b each worker is to process (nil: none),
// leaving out those that succeeded in an earlier delivery.
func (f *fanout) split(b messages.Batch) [][]messages.Record {
	if len(b.Records) > 0 {
		first := b.Records[0].Pos()
		for p := range f.done {
			if comparePos(p, first) < 0 {
				delete(f.done, p) // before this delivery: it will not come again
			}
		}
		f.givenUp(first)
	}
	parts := make([][]messages.Record, f.n)
	for _, r := range b.Records {
		if f.done[r.Pos()] {
			continue
		}
		w := WorkerOf(r.PartitionKey, f.n)
		parts[w] = append(parts[w], r)
	}
	return parts
}

// outcome is what one worker's call returned.
type outcome struct {
	res Result
	err error
}

// combine takes the workers' outcomes for parts (as split made them) of
// batch b and returns the batch's answer.
func (f *fanout) combine(b messages.Batch, parts [][]messages.Record, outs []outcome) messages.Processed {
	index := func(p messages.Position) int { // in b, sorted
		i, _ := slices.BinarySearchFunc(b.Records, p, func(r messages.Record, p messages.Position) int { return comparePos(r.Pos(), p) })
		return i
	}
	// The batch's failure point F (an index in b; len: none), whether it
	// is known to be a failed record, and every worker's failure point.
	failAt, known := len(b.Records), false
	var points []int
	var errs []error
	var bad error              // a position named that is not a record of its worker's part
	okUpTo := make([]int, f.n) // per worker: how many of its part succeeded
	named := make([]bool, f.n) // per worker: it named its failed records
	for w, part := range parts {
		okUpTo[w] = len(part)
		if len(part) == 0 {
			continue
		}
		o := outs[w]
		at, k := 0, false
		switch {
		case o.err != nil:
			okUpTo[w], at, k = 0, index(part[0].Pos()), len(part) == 1
			errs = append(errs, o.err)
		case len(o.res.Failed) > 0:
			j, missing := firstNamed(part, o.res.Failed)
			if missing != nil {
				if bad == nil {
					bad = fmt.Errorf("actors: Result.Failed names %s, not a record of the batch given to worker %d of shard %s", *missing, w, b.ShardID)
				}
				okUpTo[w], at = 0, index(part[0].Pos())
				break
			}
			okUpTo[w], at, k = j, index(part[j].Pos()), true
			named[w] = true
		default:
			continue
		}
		points = append(points, at)
		if at < failAt {
			failAt, known = at, k
		}
	}
	// What was delivered to workers now (b's records that are not done,
	// as split made the parts) is uncovered until their checkpoints say
	// otherwise; a record delivered again after a failure is tracked
	// already. fresh is in batch order.
	var fresh []posWorker
	add := make([][]messages.Position, f.n)
	for _, r := range b.Records {
		if f.done[r.Pos()] {
			continue
		}
		w := WorkerOf(r.PartitionKey, f.n)
		if !contains(f.uncovered[w], r.Pos()) {
			add[w] = append(add[w], r.Pos())
			fresh = append(fresh, posWorker{pos: r.Pos(), worker: w})
		}
	}
	for w := range add {
		f.uncovered[w] = mergePos(f.uncovered[w], add[w])
	}
	f.order = mergeOrder(f.order, fresh)
	// Records that succeeded: their workers' checkpoints apply, and, if
	// the batch is to be delivered again, they are not given to a worker
	// again.
	failed := bad != nil || failAt < len(b.Records)
	for w, part := range parts {
		if len(part) == 0 {
			continue
		}
		if okUpTo[w] < len(part) {
			// Failed here: the records it did not process stay uncovered,
			// and are delivered again; its checkpoint is ignored.
			for _, r := range part[:okUpTo[w]] {
				f.done[r.Pos()] = true
			}
			if okUpTo[w] > 0 {
				f.acked[w] = part[okUpTo[w]-1].Pos()
			}
			if named[w] {
				// As with Result.Failed from a single value: its records
				// before the first named one may be checkpointed.
				f.coverBefore(w, part[okUpTo[w]].Pos())
			}
			continue
		}
		if failed {
			for _, r := range part {
				f.done[r.Pos()] = true
			}
		}
		f.acked[w] = part[len(part)-1].Pos()
		f.cover(w, outs[w].res.Checkpoint)
	}
	switch {
	case bad != nil:
		return messages.Processed{BatchID: b.BatchID, Err: bad}
	case !failed:
		// Every record succeeded (some in an earlier delivery).
		if len(f.done) > 0 {
			for _, r := range b.Records {
				delete(f.done, r.Pos())
			}
		}
		return messages.Processed{BatchID: b.BatchID, Checkpoint: f.checkpoint(b)}
	case !known:
		return messages.Processed{BatchID: b.BatchID, Err: errors.Join(errs...)}
	}
	// The shard takes the records before F as processed and checkpoints
	// them. If a worker holds one of them (processed, not covered by its
	// checkpoints), that would be ahead of it: the batch fails whole
	// instead (unless F is its first record: then nothing is checkpointed).
	fpos := b.Records[failAt].Pos()
	if failAt > 0 {
		if w, held, ok := f.earliestUncovered(); ok && comparePos(held, fpos) < 0 {
			err := errors.Join(errs...)
			if err == nil {
				err = fmt.Errorf("actors: record %s failed (named in Result.Failed)", fpos)
			}
			return messages.Processed{BatchID: b.BatchID, Err: fmt.Errorf("%w; the batch fails whole, as worker %d has not checkpointed record %s before it", err, w, held)}
		}
	}
	f.advance()
	if failAt > 0 {
		if p := b.Records[failAt-1].Pos(); f.reported.SequenceNumber == "" || comparePos(p, f.reported) > 0 {
			f.reported = p
		}
	}
	slices.Sort(points)
	ps := make([]messages.Position, len(points))
	for i, at := range points {
		ps[i] = b.Records[at].Pos()
	}
	return messages.Processed{BatchID: b.BatchID, Failed: ps}
}

// firstNamed returns the index in part of the first record named in
// failed, or a position named that is not a record of part.
func firstNamed(part []messages.Record, failed []messages.Position) (int, *messages.Position) {
	first := len(part)
	for _, p := range failed {
		j, ok := slices.BinarySearchFunc(part, p, func(r messages.Record, p messages.Position) int { return comparePos(r.Pos(), p) })
		if !ok {
			return 0, &p
		}
		first = min(first, j)
	}
	return first, nil
}

// givenUp forgets the records before first that were delivered, never
// acknowledged, and will not be delivered again: the shard moved past them
// (the dead-letter handler took them) and checkpointed there. A record a
// worker acknowledged but did not cover yet (it holds it) stays.
func (f *fanout) givenUp(first messages.Position) {
	gone := map[messages.Position]bool{}
	for w, u := range f.uncovered {
		if len(u) == 0 || comparePos(u[0], first) >= 0 {
			continue // the usual case
		}
		kept := u[:0]
		for i, p := range u {
			if comparePos(p, first) >= 0 {
				kept = append(kept, u[i:]...) // sorted: the rest is after first
				break
			}
			if f.acked[w].SequenceNumber == "" || comparePos(p, f.acked[w]) > 0 {
				gone[p] = true
				continue
			}
			kept = append(kept, p)
		}
		f.uncovered[w] = kept
	}
	if len(gone) == 0 {
		return
	}
	kept := f.order[:0]
	for _, pw := range f.order {
		if gone[pw.pos] {
			if comparePos(pw.pos, f.reported) > 0 || f.reported.SequenceNumber == "" {
				f.reported = pw.pos // the shard checkpointed past it
			}
			continue
		}
		kept = append(kept, pw)
	}
	f.order = kept
	f.advance()
}

// contains reports whether the sorted list ps holds p.
func contains(ps []messages.Position, p messages.Position) bool {
	i, ok := slices.BinarySearchFunc(ps, p, comparePos)
	return ok && i < len(ps)
}

// mergePos merges two lists of positions sorted in order.
func mergePos(a, b []messages.Position) []messages.Position {
	if len(b) == 0 {
		return a
	}
	if len(a) == 0 || comparePos(a[len(a)-1], b[0]) < 0 {
		return append(a, b...)
	}
	out := slices.Concat(a, b)
	slices.SortFunc(out, comparePos)
	return out
}

// mergeOrder merges two lists sorted by position.
func mergeOrder(a, b []posWorker) []posWorker {
	if len(a) == 0 || len(b) == 0 || comparePos(a[len(a)-1].pos, b[0].pos) < 0 {
		return append(a, b...) // the usual case: b comes after
	}
	out := make([]posWorker, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		if comparePos(a[i].pos, b[j].pos) <= 0 {
			out = append(out, a[i])
			i++
		} else {
			out = append(out, b[j])
			j++
		}
	}
	return append(append(out, a[i:]...), b[j:]...)
}

// cover applies worker w's checkpoint request to its uncovered records:
// never beyond the last record it acknowledged (one delivered to it but
// failed, waiting to be delivered again, stays uncovered).
func (f *fanout) cover(w int, cp messages.Checkpoint) {
	p := f.acked[w]
	switch cp.Mode {
	case messages.AtBatchEnd:
	case messages.AtSequence:
		if q := (messages.Position{SequenceNumber: cp.SequenceNumber, SubSequenceNumber: cp.SubSequenceNumber}); comparePos(q, p) < 0 {
			p = q
		}
	default:
		return
	}
	if p.SequenceNumber == "" {
		return
	}
	{
		u := f.uncovered[w]
		k := 0
		for k < len(u) && comparePos(u[k], p) <= 0 {
			k++
		}
		f.uncovered[w] = u[k:]
	}
}

// coverBefore covers worker w's records before p.
func (f *fanout) coverBefore(w int, p messages.Position) {
	u := f.uncovered[w]
	k := 0
	for k < len(u) && comparePos(u[k], p) < 0 {
		k++
	}
	f.uncovered[w] = u[k:]
}

// earliestUncovered returns the earliest record not covered, and its
// worker; false if there is none.
func (f *fanout) earliestUncovered() (int, messages.Position, bool) {
	w, ok := -1, false
	for v, u := range f.uncovered {
		if len(u) > 0 && (!ok || comparePos(u[0], f.uncovered[w][0]) < 0) {
			w, ok = v, true
		}
	}
	if !ok {
		return 0, messages.Position{}, false
	}
	return w, f.uncovered[w][0], true
}

// advance moves the covered prefix of order forward to just before the
// earliest uncovered record.
func (f *fanout) advance() {
	_, earliest, ok := f.earliestUncovered()
	k := 0
	for k < len(f.order) && (!ok || comparePos(f.order[k].pos, earliest) < 0) {
		f.covered = f.order[k].pos
		k++
	}
	f.order = f.order[k:]
}

// checkpoint returns the batch's checkpoint after its workers' checkpoints
// were applied: CheckpointBatchEnd when everything delivered up to the
// batch's last record is covered, else CheckpointAt the last covered record
// if it moved, else none. It is never beyond the batch's last record (with
// a bisect, records after it were delivered before and may be covered):
// the shard has acknowledged no record after it yet.
func (f *fanout) checkpoint(b messages.Batch) messages.Checkpoint {
	f.advance()
	c := f.covered
	last, ok := b.Last()
	if ok && c.SequenceNumber != "" && comparePos(c, last.Pos()) > 0 {
		c = last.Pos()
	}
	if c.SequenceNumber == "" || (f.reported.SequenceNumber != "" && comparePos(c, f.reported) <= 0) {
		return messages.Checkpoint{}
	}
	f.reported = c
	if ok && last.Pos() == c {
		return messages.CheckpointBatchEnd()
	}
	return messages.CheckpointAt(c.SequenceNumber, c.SubSequenceNumber)
}

// shutdown applies the workers' shutdown checkpoints and returns the
// shard's: CheckpointBatchEnd when all that was acknowledged is covered.
func (f *fanout) shutdown(cps []messages.Checkpoint) messages.Checkpoint {
	for w, cp := range cps {
		f.cover(w, cp)
	}
	f.advance()
	if len(f.order) == 0 {
		if f.covered.SequenceNumber == "" {
			return messages.Checkpoint{}
		}
		return messages.CheckpointBatchEnd()
	}
	if f.covered.SequenceNumber == "" || (f.reported.SequenceNumber != "" && comparePos(f.covered, f.reported) <= 0) {
		return messages.Checkpoint{}
	}
	return messages.CheckpointAt(f.covered.SequenceNumber, f.covered.SubSequenceNumber)
}

// runWorkers calls each worker's ProcessRecords on its part at once and
// waits for all; a panic in one is returned (to be raised again in the
// actor's goroutine) after all have returned.
func runWorkers(ctx context.Context, values []Processor, b messages.Batch, parts [][]messages.Record) ([]outcome, any) {
	outs := make([]outcome, len(values))
	panics := make([]any, len(values))
	done := make(chan int, len(values))
	calls := 0
	for w, part := range parts {
		if len(part) == 0 {
			continue
		}
		calls++
		sub := b
		sub.Records = part
		go func() {
			defer func() {
				if r := recover(); r != nil {
					panics[w] = r
				}
				done <- w
			}()
			if values[w] == nil {
				outs[w] = outcome{err: ErrNoProcessor}
				return
			}
			res, err := values[w].ProcessRecords(ctx, sub)
			outs[w] = outcome{res: res, err: err}
		}()
	}
	for range calls {
		<-done
	}
	for _, p := range panics {
		if p != nil {
			return outs, p
		}
	}
	return outs, nil
}
