package stream

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"
)

// MemStream is an in-memory Kinesis stream for fast tests, with the
// semantics a consumer sees of the real one (memstream_test.go holds it and
// Client on kinesalite to one set of cases): it has Client's ListShards,
// Iterator and GetRecords (what the shard actor uses), and its errors are
// the ones Client returns in the same situation: the SDK's typed error,
// classified (ErrThrottled, ErrExpiredIterator, ErrShardNotFound,
// ErrInvalidArgument) and wrapped with the same text.
//
//   - Put appends records to an open shard and gives them increasing
//     sequence numbers of 56 decimal digits, as Kinesis does; a number
//     encodes its shard, so one used on another shard is an invalid
//     argument.
//   - Iterators start at TRIM_HORIZON, LATEST, AT_ or AFTER_SEQUENCE_NUMBER
//     or AT_TIMESTAMP; GetRecords returns at most limit records (clamped to
//     [1, 10000]), the next iterator, and MillisBehindLatest: 0 when the
//     batch reaches the tip, else how long ago its last record arrived (at
//     least 1).
//   - SplitShard and MergeShards close shards as Kinesis does: a closed
//     shard keeps its records, gets an EndingSequenceNumber, and the read
//     past its last record returns no records, no NextIterator and the
//     ChildShards (with their parents); ListShards lists the children with
//     their parent ids. As on kinesalite, the batch that returns the last
//     records still has a NextIterator; the next one ends the shard.
//   - Iterators expire IteratorTTL after they were issued (5 minutes, as on
//     Kinesis; SetIteratorTTL) or at once with ExpireIterators.
//   - SetFault installs a hook called before every call, which may fail it
//     (Throttle) or hang it until its context ends (Hang).
//
// There is no retention (nothing is trimmed), no per-shard rate limit and
// no size limit on a batch. It is safe for concurrent use.
type MemStream struct {
	name string
	uid  string // tells this stream's iterators from another's

	mu      sync.Mutex
	shards  []*memShard // by index: shardId-%012d
	byID    map[string]*memShard
	counter uint64 // the last sequence counter handed out, stream-wide
	issued  uint64 // iterators issued
	expired uint64 // iterators issued before this number are expired
	ttl     time.Duration
	now     func() time.Time
	fault   func(ctx context.Context, op, shardID string) error
	calls   map[string]int
}

type memShard struct {
	idx      int
	info     Shard
	recs     []Record
	counters []uint64 // the sequence counter of each record, increasing
	start    uint64   // the counter of StartingSequenceNumber
	children []Shard  // set when closed
}

// The operations a fault hook is called with.
const (
	OpListShards       = "ListShards"
	OpGetShardIterator = "GetShardIterator"
	OpGetRecords       = "GetRecords"
)

// IteratorTTL is how long a Kinesis shard iterator is valid.
const IteratorTTL = 5 * time.Minute

var memStreams atomic.Int64

// NewMemStream returns a stream named name with shards open shards,
// shardId-000000000000 and on, splitting the hash key space evenly as
// CreateStream does.
func NewMemStream(name string, shards int) *MemStream {
	s := &MemStream{
		name:  name,
		uid:   strconv.FormatInt(memStreams.Add(1), 10),
		byID:  map[string]*memShard{},
		ttl:   IteratorTTL,
		now:   time.Now,
		calls: map[string]int{},
	}
	space := new(big.Int).Lsh(big.NewInt(1), 128)
	width := new(big.Int).Div(space, big.NewInt(int64(max(shards, 1))))
	for i := range shards {
		lo := new(big.Int).Mul(width, big.NewInt(int64(i)))
		hi := new(big.Int).Mul(width, big.NewInt(int64(i+1)))
		if i == shards-1 {
			hi = space
		}
		hi.Sub(hi, big.NewInt(1))
		s.addShard(Shard{StartingHashKey: lo.String(), EndingHashKey: hi.String()})
	}
	return s
}

// addShard appends an open shard; mu held (or s not yet shared).
func (s *MemStream) addShard(sh Shard) *memShard {
	idx := len(s.shards)
	s.counter++
	sh.ID = fmt.Sprintf("shardId-%012d", idx)
	sh.StartingSequenceNumber = seqString(s.counter, idx)
	m := &memShard{idx: idx, info: sh, start: s.counter}
	s.shards = append(s.shards, m)
	s.byID[sh.ID] = m
	return m
}

// StreamName returns the stream's name.
func (s *MemStream) StreamName() string { return s.name }

// SetIteratorTTL sets how long an iterator stays valid after it was issued
// (IteratorTTL by default); iterators already issued are judged by it too.
func (s *MemStream) SetIteratorTTL(d time.Duration) {
	s.mu.Lock()
	s.ttl = d
	s.mu.Unlock()
}

// SetClock sets the clock used for arrival timestamps, iterator expiry and
// MillisBehindLatest (time.Now by default).
func (s *MemStream) SetClock(now func() time.Time) {
	s.mu.Lock()
	s.now = now
	s.mu.Unlock()
}

// ExpireIterators makes every iterator issued so far expired: its next
// GetRecords fails with ErrExpiredIterator (as one older than 5 minutes
// does on Kinesis).
func (s *MemStream) ExpireIterators() {
	s.mu.Lock()
	s.expired = s.issued
	s.mu.Unlock()
}

// SetFault sets the hook called before every ListShards, Iterator and
// GetRecords with the operation (OpListShards, OpGetShardIterator,
// OpGetRecords), the shard it is about ("" for ListShards, and for a
// GetRecords with an iterator that is not one of this stream's) and the
// call's context. A non-nil error is returned instead of making the call,
// classified and wrapped as Client does: an SDK error such as the one
// Throttle returns becomes ErrThrottled. Hang blocks until the context
// ends. nil removes the hook.
func (s *MemStream) SetFault(f func(ctx context.Context, op, shardID string) error) {
	s.mu.Lock()
	s.fault = f
	s.mu.Unlock()
}

// Calls returns how many times op was called (faulted calls included).
func (s *MemStream) Calls(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

// Throttle returns the error Kinesis answers a call over the shard's
// limits with (ProvisionedThroughputExceededException): for a fault hook.
func Throttle() error {
	return &types.ProvisionedThroughputExceededException{Message: aws.String("Rate exceeded for shard in stream under account 000000000000.")}
}

// Hang blocks until ctx ends and returns its error: a fault hook for a
// call that hangs (a stalled server, a half-open connection).
func Hang(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}

// before counts the call and runs the fault hook.
func (s *MemStream) before(ctx context.Context, op, shardID string) error {
	s.mu.Lock()
	s.calls[op]++
	f := s.fault
	s.mu.Unlock()
	if f != nil {
		if err := f(ctx, op, shardID); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// apiError wraps a typed Kinesis error as the SDK returns it and classifies
// it as Client does.
func apiError(op string, err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		err = &smithy.OperationError{ServiceID: "Kinesis", OperationName: op, Err: err}
	}
	return Classify(err)
}

func notFound(msg string) error {
	return &types.ResourceNotFoundException{Message: aws.String(msg)}
}

func invalidArg(msg string) error {
	return &types.InvalidArgumentException{Message: aws.String(msg)}
}

// ---- sequence numbers and iterators -----------------------------------------

// seqString is the 56-digit sequence number of counter c in shard idx:
// "49", the counter (so numbers grow with time across the stream, as on
// Kinesis), the shard index.
func seqString(c uint64, idx int) string {
	return fmt.Sprintf("49%044d%010d", c, idx)
}

// parseSeq returns the counter and shard index a sequence number encodes.
func parseSeq(seq string) (c uint64, idx int, ok bool) {
	if len(seq) != 56 || !strings.HasPrefix(seq, "49") {
		return 0, 0, false
	}
	c, err := strconv.ParseUint(seq[2:46], 10, 64)
	if err != nil {
		return 0, 0, false
	}
	i, err := strconv.ParseUint(seq[46:], 10, 31)
	if err != nil {
		return 0, 0, false
	}
	return c, int(i), true
}

// memIterator is what an iterator string carries: the shard, the position
// (the first record with a counter at or above pos), and when and as which
// one it was issued.
type memIterator struct {
	idx    int
	pos    uint64
	gen    uint64
	issued int64 // unix nanoseconds
}

// iterator issues an iterator; mu held.
func (s *MemStream) iterator(idx int, pos uint64) string {
	s.issued++
	return fmt.Sprintf("memstream/%s/%d/%d/%d/%d", s.uid, idx, pos, s.issued, s.now().UnixNano())
}

func (s *MemStream) parseIterator(it string) (memIterator, bool) {
	f := strings.Split(it, "/")
	if len(f) != 6 || f[0] != "memstream" || f[1] != s.uid {
		return memIterator{}, false
	}
	var m memIterator
	var err error
	var idx uint64
	if idx, err = strconv.ParseUint(f[2], 10, 31); err != nil {
		return memIterator{}, false
	}
	m.idx = int(idx)
	if m.pos, err = strconv.ParseUint(f[3], 10, 64); err != nil {
		return memIterator{}, false
	}
	if m.gen, err = strconv.ParseUint(f[4], 10, 64); err != nil {
		return memIterator{}, false
	}
	if m.issued, err = strconv.ParseInt(f[5], 10, 64); err != nil {
		return memIterator{}, false
	}
	return m, true
}

// ---- the API ------------------------------------------------------------------

// ListShards lists every shard, open and closed, by shard id.
func (s *MemStream) ListShards(ctx context.Context) ([]Shard, error) {
	if err := s.before(ctx, OpListShards, ""); err != nil {
		return nil, fmt.Errorf("stream: ListShards %s (page %d): %w", s.name, 1, apiError(OpListShards, err))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Shard, len(s.shards))
	for i, sh := range s.shards {
		out[i] = sh.info
	}
	return out, nil
}

// Iterator returns a shard iterator for shardID at pos.
func (s *MemStream) Iterator(ctx context.Context, shardID string, pos Position) (string, error) {
	if shardID == "" {
		return "", errors.New("stream: Iterator: empty shard id")
	}
	switch pos.Type {
	case types.ShardIteratorTypeTrimHorizon, types.ShardIteratorTypeLatest:
	case types.ShardIteratorTypeAtTimestamp:
		if pos.Timestamp.IsZero() {
			return "", fmt.Errorf("stream: Iterator %s: position %s needs a timestamp", shardID, pos.Type)
		}
	case types.ShardIteratorTypeAfterSequenceNumber, types.ShardIteratorTypeAtSequenceNumber:
		if pos.SequenceNumber == "" {
			return "", fmt.Errorf("stream: Iterator %s: position %s needs a sequence number", shardID, pos.Type)
		}
	default:
		return "", fmt.Errorf("stream: Iterator %s: unknown position type %q", shardID, string(pos.Type))
	}
	fail := func(err error) (string, error) {
		return "", fmt.Errorf("stream: GetShardIterator %s %s %s: %w", s.name, shardID, pos.Type, apiError(OpGetShardIterator, err))
	}
	if err := s.before(ctx, OpGetShardIterator, shardID); err != nil {
		return fail(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sh, ok := s.byID[shardID]
	if !ok {
		return fail(notFound(fmt.Sprintf("Shard %s in stream %s under account 000000000000 does not exist", shardID, s.name)))
	}
	idx := sh.idx
	var at uint64
	switch pos.Type {
	case types.ShardIteratorTypeTrimHorizon:
		at = sh.start
	case types.ShardIteratorTypeLatest:
		at = s.counter + 1
	case types.ShardIteratorTypeAtTimestamp:
		now := s.now()
		ts := pos.Timestamp.Truncate(time.Millisecond) // the SDK sends milliseconds
		if ts.After(now) {
			return fail(invalidArg(fmt.Sprintf("The timestampInMillis parameter cannot be greater than the currentTimestampInMillis. timestampInMillis: %d, currentTimestampInMillis: %d", ts.UnixMilli(), now.UnixMilli())))
		}
		at = s.counter + 1
		for i, r := range sh.recs {
			if !r.ApproximateArrivalTimestamp.Before(ts) {
				at = sh.counters[i]
				break
			}
		}
	case types.ShardIteratorTypeAfterSequenceNumber, types.ShardIteratorTypeAtSequenceNumber:
		c, sidx, ok := parseSeq(pos.SequenceNumber)
		if !ok {
			return fail(invalidArg(fmt.Sprintf("StartingSequenceNumber %s used in GetShardIterator on shard %s in stream %s under account 000000000000 is invalid.", pos.SequenceNumber, shardID, s.name)))
		}
		if sidx != idx {
			return fail(invalidArg(fmt.Sprintf("Invalid StartingSequenceNumber. It encodes shardId-%012d, while it was used in a call to a shard with %s", sidx, shardID)))
		}
		at = c
		if pos.Type == types.ShardIteratorTypeAfterSequenceNumber {
			at++
		}
	}
	return s.iterator(idx, at), nil
}

// GetRecords reads up to limit records (clamped to [1, 10000]) at iterator.
func (s *MemStream) GetRecords(ctx context.Context, iterator string, limit int32) (Batch, error) {
	if iterator == "" {
		return Batch{}, errors.New("stream: GetRecords: empty shard iterator")
	}
	fail := func(err error) (Batch, error) {
		return Batch{}, fmt.Errorf("stream: GetRecords %s: %w", s.name, apiError(OpGetRecords, err))
	}
	it, ok := s.parseIterator(iterator)
	shardID := ""
	if ok {
		shardID = fmt.Sprintf("shardId-%012d", it.idx)
	}
	if err := s.before(ctx, OpGetRecords, shardID); err != nil {
		return fail(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if !ok || it.issued > now.UnixNano() {
		return fail(invalidArg("Invalid ShardIterator."))
	}
	if it.idx >= len(s.shards) {
		return fail(notFound(fmt.Sprintf("Shard %s in stream %s under account 000000000000 does not exist", shardID, s.name)))
	}
	if age := now.Sub(time.Unix(0, it.issued)); it.gen <= s.expired || age > s.ttl {
		return fail(&types.ExpiredIteratorException{Message: aws.String(fmt.Sprintf("Iterator expired. The iterator was created at time %s while right now it is %s which is further in the future than the tolerated delay of %d milliseconds.",
			time.Unix(0, it.issued).UTC().Format(time.RFC1123), now.UTC().Format(time.RFC1123), s.ttl.Milliseconds()))})
	}
	sh := s.shards[it.idx]
	first, _ := slices.BinarySearch(sh.counters, it.pos)
	end := min(first+int(ClampLimit(limit)), len(sh.recs))
	b := Batch{}
	if end > first {
		b.Records = make([]Record, end-first)
		for i, r := range sh.recs[first:end] {
			r.Data = slices.Clone(r.Data)
			b.Records[i] = r
		}
		if end < len(sh.recs) {
			last := b.Records[len(b.Records)-1].ApproximateArrivalTimestamp
			b.MillisBehindLatest = max(1, now.Sub(last).Milliseconds())
		}
		b.NextIterator = s.iterator(it.idx, sh.counters[end-1]+1)
		return b, nil
	}
	if sh.info.Closed() {
		// Past the last record of a closed shard: the end.
		b.ChildShards = slices.Clone(sh.children)
		return b, nil
	}
	b.NextIterator = s.iterator(it.idx, it.pos)
	return b, nil
}

// ---- producing and resharding -------------------------------------------------

// Put appends recs to the open shard shardID, in order, and returns them as
// stored: with their sequence numbers and arrival timestamps (the clock's,
// to the millisecond, as Kinesis reports them) set, SubSequenceNumber 0.
// The data is copied. A shard that does not exist is ErrShardNotFound; a
// closed one, ErrInvalidArgument (Kinesis puts by hash key into the open
// shard that covers it).
func (s *MemStream) Put(shardID string, recs ...Record) ([]Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sh, ok := s.byID[shardID]
	if !ok {
		return nil, fmt.Errorf("stream: Put %s %s: %w", s.name, shardID, apiError("PutRecords", notFound(fmt.Sprintf("Shard %s in stream %s under account 000000000000 does not exist", shardID, s.name))))
	}
	if sh.info.Closed() {
		return nil, fmt.Errorf("stream: Put %s %s: %w", s.name, shardID, apiError("PutRecords", invalidArg(fmt.Sprintf("Shard %s in stream %s is closed", shardID, s.name))))
	}
	idx := sh.idx
	at := s.now().Truncate(time.Millisecond)
	out := make([]Record, len(recs))
	for i, r := range recs {
		s.counter++
		r.SequenceNumber = seqString(s.counter, idx)
		r.SubSequenceNumber = 0
		r.ApproximateArrivalTimestamp = at
		r.Data = slices.Clone(r.Data)
		out[i] = r
		r.Data = slices.Clone(r.Data) // the stored copy is the caller's to keep
		sh.recs = append(sh.recs, r)
		sh.counters = append(sh.counters, s.counter)
	}
	return out, nil
}

// child is a ChildShard as GetRecords reports it: no sequence numbers.
func child(c Shard) Shard {
	return Shard{ID: c.ID, ParentShardID: c.ParentShardID, AdjacentParentShardID: c.AdjacentParentShardID, StartingHashKey: c.StartingHashKey, EndingHashKey: c.EndingHashKey}
}

// SplitShard closes the open shard shardID and opens two children: one
// with the hash keys below newStartingHashKey, one with the rest ("" splits
// in the middle). It returns the children's ids. Errors are Kinesis's:
// ErrShardNotFound, and ErrInvalidArgument for a closed shard or a hash key
// not strictly inside its range (above its start plus one).
func (s *MemStream) SplitShard(shardID, newStartingHashKey string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fail := func(err error) ([]string, error) {
		return nil, fmt.Errorf("stream: SplitShard %s %s: %w", s.name, shardID, apiError("SplitShard", err))
	}
	sh, ok := s.byID[shardID]
	if !ok {
		return fail(notFound(fmt.Sprintf("Could not find shard %s in stream %s under account 000000000000.", shardID, s.name)))
	}
	if sh.info.Closed() {
		return fail(invalidArg(fmt.Sprintf("Shard %s in stream %s under account 000000000000 has already been merged or split, and thus is not eligible for merging or splitting.", shardID, s.name)))
	}
	lo, _ := new(big.Int).SetString(sh.info.StartingHashKey, 10)
	hi, _ := new(big.Int).SetString(sh.info.EndingHashKey, 10)
	var h *big.Int
	if newStartingHashKey == "" {
		h = new(big.Int).Rsh(new(big.Int).Add(lo, hi), 1)
	} else if h, ok = new(big.Int).SetString(newStartingHashKey, 10); !ok {
		return fail(invalidArg(fmt.Sprintf("NewStartingHashKey %s is not a number", newStartingHashKey)))
	}
	if h.Cmp(new(big.Int).Add(lo, big.NewInt(1))) <= 0 || h.Cmp(hi) >= 0 {
		return fail(invalidArg(fmt.Sprintf("NewStartingHashKey %s used in SplitShard() on shard %s in stream %s under account 000000000000 is not both greater than one plus the shard's StartingHashKey %s and less than the shard's EndingHashKey %s.",
			h, shardID, s.name, sh.info.StartingHashKey, sh.info.EndingHashKey)))
	}
	s.counter++ // the parent's end comes before the children's start
	end := s.counter
	a := s.addShard(Shard{ParentShardID: shardID, StartingHashKey: sh.info.StartingHashKey, EndingHashKey: new(big.Int).Sub(h, big.NewInt(1)).String()})
	b := s.addShard(Shard{ParentShardID: shardID, StartingHashKey: h.String(), EndingHashKey: sh.info.EndingHashKey})
	sh.info.EndingSequenceNumber = seqString(end, sh.idx)
	sh.children = []Shard{child(a.info), child(b.info)}
	return []string{a.info.ID, b.info.ID}, nil
}

// MergeShards closes the open shards shardID and adjacentID, where
// adjacentID's hash keys start right after shardID's end, and opens their
// child (ParentShardID shardID, AdjacentParentShardID adjacentID). It
// returns the child's id.
func (s *MemStream) MergeShards(shardID, adjacentID string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fail := func(err error) (string, error) {
		return "", fmt.Errorf("stream: MergeShards %s %s %s: %w", s.name, shardID, adjacentID, apiError("MergeShards", err))
	}
	var pair [2]*memShard
	for i, id := range []string{shardID, adjacentID} {
		sh, ok := s.byID[id]
		if !ok {
			return fail(notFound(fmt.Sprintf("Could not find shard %s in stream %s under account 000000000000.", id, s.name)))
		}
		if sh.info.Closed() {
			return fail(invalidArg(fmt.Sprintf("Shard %s in stream %s under account 000000000000 has already been merged or split, and thus is not eligible for merging or splitting.", id, s.name)))
		}
		pair[i] = sh
	}
	aEnd, _ := new(big.Int).SetString(pair[0].info.EndingHashKey, 10)
	bStart, _ := new(big.Int).SetString(pair[1].info.StartingHashKey, 10)
	if new(big.Int).Add(aEnd, big.NewInt(1)).Cmp(bStart) != 0 {
		return fail(invalidArg(fmt.Sprintf("Shards %s and %s in stream %s under account 000000000000 are not an adjacent pair of shards eligible for merging", shardID, adjacentID, s.name)))
	}
	s.counter++
	end := s.counter
	c := s.addShard(Shard{ParentShardID: shardID, AdjacentParentShardID: adjacentID, StartingHashKey: pair[0].info.StartingHashKey, EndingHashKey: pair[1].info.EndingHashKey})
	for _, sh := range pair {
		sh.info.EndingSequenceNumber = seqString(end, sh.idx)
		sh.children = []Shard{child(c.info)}
	}
	return c.info.ID, nil
}
