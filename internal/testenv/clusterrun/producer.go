package clusterrun

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

// Producer writes records {"pk":"kK","n":N} round-robin over keys k0..k{K-1}
// at a rate, N counting from 1 per key, and counts per key what was
// written, so a verifier knows exactly what to expect in the ledgers.
//
// Per-key order holds: a PutRecords call carries at most one record per key
// (at most Keys records), and the records it reports as failed are resent,
// in order, before the next call.
type Producer struct {
	kc     *kinesis.Client
	stream string
	keys   int
	rate   float64

	mu       sync.Mutex
	produced map[string]int // written successfully, per key
	// written[pk][n-1]: when the PutRecords call that wrote (pk, n)
	// began, in Unix ms (an upper bound on how long a record waited).
	written map[string][]int64
	total   int
	errs    int // failed calls (retried)
	lastErr error

	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// StartProducer starts writing rate records per second (keys ≥ 1) to
// stream until Stop.
func StartProducer(kc *kinesis.Client, stream string, keys int, rate float64) *Producer {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Producer{kc: kc, stream: stream, keys: max(keys, 1), rate: rate,
		produced: map[string]int{}, written: map[string][]int64{}, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.err = p.run(ctx)
	}()
	return p
}

func (p *Producer) run(ctx context.Context) error {
	const tick = 100 * time.Millisecond
	began := time.Now()
	sent := 0
	next := make([]int, p.keys) // last n per key
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		due := int(time.Since(began).Seconds() * p.rate)
		for sent < due && ctx.Err() == nil {
			n := min(due-sent, p.keys)
			var entries []types.PutRecordsRequestEntry
			var pks []string
			for i := 0; i < n; i++ {
				k := (sent + i) % p.keys
				pk := fmt.Sprintf("k%d", k)
				next[k]++
				entries = append(entries, types.PutRecordsRequestEntry{
					PartitionKey: aws.String(pk),
					Data:         fmt.Appendf(nil, `{"pk":%q,"n":%d}`, pk, next[k]),
				})
				pks = append(pks, pk)
			}
			began := time.Now().UnixMilli()
			if err := p.putAll(entries); err != nil {
				return err
			}
			p.add(pks, began)
			sent += n
		}
	}
}

func (p *Producer) add(pks []string, at int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pk := range pks {
		p.produced[pk]++
		p.written[pk] = append(p.written[pk], at)
		p.total++
	}
}

// Written returns, per key, when each record was written (index n-1, Unix
// ms at the start of the PutRecords call that wrote it).
func (p *Producer) Written() map[string][]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[string][]int64, len(p.written))
	for k, v := range p.written {
		m[k] = append([]int64(nil), v...)
	}
	return m
}

// putAll writes entries, resending failed entries (in order) and failed
// calls until all are written (at most 50 attempts). It does not watch
// Stop: a batch is either written completely or the producer fails, so
// the counts are exact.
func (p *Producer) putAll(entries []types.PutRecordsRequestEntry) error {
	for attempt := 1; len(entries) > 0; attempt++ {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := p.kc.PutRecords(cctx, &kinesis.PutRecordsInput{StreamName: aws.String(p.stream), Records: entries})
		cancel()
		if err == nil {
			var failed []types.PutRecordsRequestEntry
			for i, r := range out.Records {
				if r.ErrorCode != nil {
					failed = append(failed, entries[i])
					err = fmt.Errorf("%s: %s", aws.ToString(r.ErrorCode), aws.ToString(r.ErrorMessage))
				}
			}
			entries = failed
		}
		if err != nil {
			p.mu.Lock()
			p.errs++
			p.lastErr = err
			p.mu.Unlock()
			if attempt >= 50 {
				return fmt.Errorf("clusterrun: producer: PutRecords failing after %d attempts: %w", attempt, err)
			}
			<-time.After(min(time.Duration(attempt)*100*time.Millisecond, time.Second))
		}
	}
	return nil
}

// Produced returns the records written so far per key and in total.
func (p *Producer) Produced() (map[string]int, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[string]int, len(p.produced))
	for k, v := range p.produced {
		m[k] = v
	}
	return m, p.total
}

// Errors returns how many PutRecords calls failed (they were retried) and
// the last error.
func (p *Producer) Errors() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.errs, p.lastErr
}

// Stop stops writing, waits for the call in flight, and returns what was
// written per key and the error that stopped the producer early, if any.
func (p *Producer) Stop() (map[string]int, error) {
	p.cancel()
	<-p.done
	m, _ := p.Produced()
	return m, p.err
}

// Done is closed when the producer has stopped (by Stop or an error).
func (p *Producer) Done() <-chan struct{} { return p.done }
