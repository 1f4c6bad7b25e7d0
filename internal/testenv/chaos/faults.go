package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/kinactor/kinactor/internal/awswait"
	"github.com/kinactor/kinactor/internal/backoff"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/internal/testenv/clusterrun"
	"github.com/kinactor/kinactor/internal/testenv/faultproxy"
)

// do carries out one fault and records it. Timed faults return when they
// are over.
func (r *runner) do(ctx context.Context, f Fault) Done {
	d := Done{Kind: f.Kind, At: time.Now()}
	if f.Kind.background() {
		// It runs beside the faults after it; it is recorded when over,
		// and the run waits for it before the drain.
		r.bg.Add(1)
		go func(d Done) {
			defer r.bg.Done()
			err := r.stranger(ctx, f, &d)
			d = r.record(d, err)
			if d.Err != "" {
				r.logf("fault %s (background) ended: %s: ERROR %s", d.Kind, d.Detail, d.Err)
			} else {
				r.logf("fault %s (background) ended: %s", d.Kind, d.Detail)
			}
		}(d)
		d.Detail = "begins in the background"
		return d
	}
	var err error
	switch f.Kind {
	case Kill, Stop:
		var p *clusterrun.Proc
		if p, err = r.victim(f.Node); err == nil {
			st, _ := r.c.Status(ctx, p)
			d.Detail, d.Node = fmt.Sprintf("%s (%d shards)", p.Name, len(st.Shards)), p.Name
			r.scrape(ctx, p)
			d.At = time.Now()
			if f.Kind == Kill {
				err = r.c.Kill(p)
			} else {
				err = r.c.Term(p)
			}
		}
	case Restart:
		var p *clusterrun.Proc
		if p, err = r.c.AddNode(ctx); err == nil {
			d.Detail, d.Node = p.Name+" started", p.Name
		}
	case Partition:
		d.Detail, err = r.partition(ctx, f)
		d.End = time.Now()
	case Throttle, Errors, Latency, Ambiguous:
		d.Detail, err = r.proxyFault(ctx, f, &d)
		d.End = time.Now()
	case Cut, Pause, Hang:
		err = r.impair(ctx, f, &d)
	case PauseAfterTake:
		err = r.pauseAfterTake(ctx, f, &d)
	case Refuse:
		err = r.refuse(ctx, f, &d)
	case Churn:
		err = r.churn(ctx, f, &d)
	case Split:
		d.Detail, err = r.split(ctx, f)
	case Merge:
		d.Detail, err = r.merge(ctx, f)
	}
	return r.record(d, err)
}

// record adds a fault as done, with err, to the run's list.
func (r *runner) record(d Done, err error) Done {
	if err != nil {
		d.Err = err.Error()
		if i := strings.Index(d.Err, "\n"); i >= 0 {
			d.Err = d.Err[:i] // no log tails in the report
		}
	}
	r.mu.Lock()
	r.done = append(r.done, d)
	r.mu.Unlock()
	return d
}

func (r *runner) victim(name string) (*clusterrun.Proc, error) {
	live := r.c.Nodes()
	if len(live) == 0 {
		return nil, errors.New("no running node")
	}
	if name == "" {
		return live[r.rng.IntN(len(live))], nil
	}
	for _, p := range live {
		if p.Name == name {
			return p, nil
		}
	}
	return nil, fmt.Errorf("node %s is not running", name)
}

func (r *runner) post(ctx context.Context, p *clusterrun.Proc, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+p.HTTP+path, nil)
	if err != nil {
		return err
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", p.Name, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: HTTP %d: %s", p.Name, path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return nil
}

// partition cuts gossip between a random minority of the running nodes
// and the rest for f.For: every node of one group drops gossip to and from
// every node of the other. Then every running node heals.
func (r *runner) partition(ctx context.Context, f Fault) (string, error) {
	live := r.c.Nodes()
	if len(live) < 2 {
		return "", errors.New("fewer than 2 running nodes")
	}
	r.rng.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
	k := 1 + r.rng.IntN(len(live)/2)
	a, b := live[:k], live[k:]
	names := func(ps []*clusterrun.Proc) (string, string) {
		var ns, as []string
		for _, p := range ps {
			ns, as = append(ns, p.Name), append(as, p.Gossip)
		}
		sort.Strings(ns)
		return strings.Join(ns, ","), strings.Join(as, ",")
	}
	an, aa := names(a)
	bn, ba := names(b)
	detail := fmt.Sprintf("{%s} | {%s} for %s", an, bn, time.Duration(f.For))
	var errs []error
	for _, p := range a {
		errs = append(errs, r.post(ctx, p, "/faults/partition?block="+url.QueryEscape(ba)))
	}
	for _, p := range b {
		errs = append(errs, r.post(ctx, p, "/faults/partition?block="+url.QueryEscape(aa)))
	}
	serr := backoff.Sleep(ctx, time.Duration(f.For))
	for _, p := range r.c.Nodes() {
		errs = append(errs, r.post(context.Background(), p, "/faults/heal"))
	}
	return detail, errors.Join(append(errs, serr)...)
}

// services returns the proxy services a target names.
func services(target string) []faultproxy.Service {
	switch target {
	case "kinesis":
		return []faultproxy.Service{faultproxy.Kinesis}
	case "dynamodb":
		return []faultproxy.Service{faultproxy.DynamoDB}
	}
	return []faultproxy.Service{faultproxy.Kinesis, faultproxy.DynamoDB}
}

// proxyFault sets a throttle, errors, latency or ambiguous fault on every
// node's proxies of the target services (an ambiguous fault naming a node:
// on that node's DynamoDB proxy alone) for f.For, then clears it.
func (r *runner) proxyFault(ctx context.Context, f Fault, d *Done) (string, error) {
	ff := faultproxy.Faults{}
	var what string
	switch f.Kind {
	case Throttle:
		ff.Throttle, what = f.Share, fmt.Sprintf("%.0f%% throttled", 100*f.Share)
	case Errors:
		ff.Errors, what = f.Share, fmt.Sprintf("%.0f%% HTTP 500", 100*f.Share)
	case Latency:
		ff.Latency, what = time.Duration(f.Delay), fmt.Sprintf("+%s per request", time.Duration(f.Delay))
	case Ambiguous:
		ff.Ambiguous, what = f.Share, fmt.Sprintf("%.0f%% of writes applied and answered with HTTP 500", 100*f.Share)
	}
	if f.Kind == Ambiguous && f.Node != "" {
		p, err := r.victim(f.Node)
		if err != nil {
			return "", err
		}
		d.Node = p.Name
		np := r.proxiesOf(p.Name)
		if np == nil {
			return "", fmt.Errorf("%s has no proxies of its own", p.Name)
		}
		np.set(faultproxy.DynamoDB, ff)
		_ = backoff.Sleep(ctx, time.Duration(f.For))
		np.set(faultproxy.DynamoDB, faultproxy.Faults{})
		return fmt.Sprintf("%s's dynamodb, %s for %s", p.Name, what, time.Duration(f.For)), nil
	}
	svcs := services(f.Target)
	for _, svc := range svcs {
		r.setServiceFaults(svc, ff)
	}
	_ = backoff.Sleep(ctx, time.Duration(f.For))
	for _, svc := range svcs {
		r.setServiceFaults(svc, faultproxy.Faults{})
	}
	return fmt.Sprintf("%s, %s for %s", f.Target, what, time.Duration(f.For)), nil
}

// impair does a cut, pause or hang of one node for f.For: it records the
// node's shards, begins the fault, waits, and ends it (also when ctx ends,
// so that no node stays impaired).
func (r *runner) impair(ctx context.Context, f Fault, d *Done) error {
	p, err := r.victim(f.Node)
	if err != nil {
		return err
	}
	st, err := r.c.Status(ctx, p)
	if err != nil {
		return err
	}
	for _, s := range st.Shards {
		d.Shards = append(d.Shards, s.ShardID)
	}
	sort.Strings(d.Shards)
	d.Node, d.Target = p.Name, f.Target
	dur := time.Duration(f.For)
	var undo func() error
	switch f.Kind {
	case Cut:
		np := r.proxiesOf(p.Name)
		if np == nil {
			return fmt.Errorf("%s has no proxies of its own", p.Name)
		}
		svcs := services(f.Target)
		for _, svc := range svcs {
			np.set(svc, faultproxy.Faults{Blackhole: true})
		}
		d.At = time.Now()
		d.Detail = fmt.Sprintf("%s's %s blackholed for %s (%d shards)", p.Name, f.Target, dur, len(d.Shards))
		if cutsDynamoDB(f.Target) {
			if lw := np.ddb.LastWrite(d.At); !lw.IsZero() {
				d.Detail += fmt.Sprintf("; last good write %.1fs before", d.At.Sub(lw).Seconds())
			}
		}
		undo = func() error {
			for _, svc := range svcs {
				np.set(svc, r.serviceFaults(svc))
			}
			return nil
		}
	case Pause:
		d.At = time.Now()
		if err := r.c.Pause(p); err != nil {
			return err
		}
		d.Detail = fmt.Sprintf("%s stopped (SIGSTOP) for %s (%d shards)", p.Name, dur, len(d.Shards))
		undo = func() error { return r.c.Resume(p) }
	case Hang:
		d.At = time.Now()
		if err := r.post(ctx, p, "/faults/hang?for="+url.QueryEscape(dur.String())); err != nil {
			return err
		}
		d.Detail = fmt.Sprintf("%s's processor hangs for %s (%d shards)", p.Name, dur, len(d.Shards))
		undo = func() error { return r.post(context.Background(), p, "/faults/hang?for=0s") }
	}
	serr := backoff.Sleep(ctx, dur)
	uerr := undo()
	d.End = time.Now()
	return errors.Join(serr, uerr)
}

func (r *runner) openShards(ctx context.Context) ([]stream.Shard, error) {
	all, err := r.sc.ListShards(ctx)
	if err != nil {
		return nil, err
	}
	var open []stream.Shard
	for _, s := range all {
		if !s.Closed() {
			open = append(open, s)
		}
	}
	sort.Slice(open, func(i, j int) bool { return hashCmp(open[i].StartingHashKey, open[j].StartingHashKey) < 0 })
	return open, nil
}

func hashCmp(a, b string) int {
	x, _ := new(big.Int).SetString(a, 10)
	y, _ := new(big.Int).SetString(b, 10)
	if x == nil || y == nil {
		return strings.Compare(a, b)
	}
	return x.Cmp(y)
}

// split splits f.Shard (or a random open shard) at the middle of its hash
// range and waits until the stream is ACTIVE again.
func (r *runner) split(ctx context.Context, f Fault) (string, error) {
	open, err := r.openShards(ctx)
	if err != nil {
		return "", err
	}
	if len(open) == 0 {
		return "", errors.New("no open shard")
	}
	s := open[r.rng.IntN(len(open))]
	if f.Shard != "" {
		found := false
		for _, o := range open {
			if o.ID == f.Shard {
				s, found = o, true
			}
		}
		if !found {
			return "", fmt.Errorf("shard %s is not open", f.Shard)
		}
	}
	lo, _ := new(big.Int).SetString(s.StartingHashKey, 10)
	hi, _ := new(big.Int).SetString(s.EndingHashKey, 10)
	if lo == nil || hi == nil || hi.Cmp(lo) <= 0 {
		return "", fmt.Errorf("shard %s: hash range %s..%s cannot be split", s.ID, s.StartingHashKey, s.EndingHashKey)
	}
	mid := new(big.Int).Add(lo, hi)
	mid.Add(mid, big.NewInt(1)).Rsh(mid, 1)
	if _, err := r.kc.SplitShard(ctx, &kinesis.SplitShardInput{StreamName: aws.String(Name), ShardToSplit: aws.String(s.ID), NewStartingHashKey: aws.String(mid.String())}); err != nil {
		return s.ID, fmt.Errorf("SplitShard %s: %w", s.ID, err)
	}
	return s.ID, r.waitNewShards(ctx, len(open))
}

// merge merges f.Shards (or a random adjacent pair of open shards).
func (r *runner) merge(ctx context.Context, f Fault) (string, error) {
	open, err := r.openShards(ctx)
	if err != nil {
		return "", err
	}
	if len(open) < 2 {
		return "", errors.New("fewer than 2 open shards")
	}
	i := r.rng.IntN(len(open) - 1)
	a, b := open[i].ID, open[i+1].ID
	if len(f.Shards) == 2 {
		a, b = f.Shards[0], f.Shards[1]
	}
	detail := a + " + " + b
	if _, err := r.kc.MergeShards(ctx, &kinesis.MergeShardsInput{StreamName: aws.String(Name), ShardToMerge: aws.String(a), AdjacentShardToMerge: aws.String(b)}); err != nil {
		return detail, fmt.Errorf("MergeShards %s %s: %w", a, b, err)
	}
	return detail, r.waitNewShards(ctx, len(open))
}

// waitNewShards waits until the stream is ACTIVE and its open shards are
// no longer openBefore in number.
func (r *runner) waitNewShards(ctx context.Context, openBefore int) error {
	_, err := awswait.Shards(ctx, r.kc, r.sc, Name, 2*time.Minute, func(all []stream.Shard) bool {
		open := 0
		for _, s := range all {
			if !s.Closed() {
				open++
			}
		}
		return open != openBefore
	})
	return err
}
