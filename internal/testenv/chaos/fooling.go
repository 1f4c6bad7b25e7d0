package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/kinactor/kinactor/cluster"
	"github.com/kinactor/kinactor/internal/awswait"
	"github.com/kinactor/kinactor/internal/backoff"
	"github.com/kinactor/kinactor/internal/gossip"
	"github.com/kinactor/kinactor/internal/ledger"
	"github.com/kinactor/kinactor/internal/ownership"
	"github.com/kinactor/kinactor/internal/testenv/clusterrun"
)

// The faults that try to fool the cluster's crash and stall machinery
// rather than break a node: a stranger application on our gossip, a pause
// right after a take, a gossip port that refuses while UDP goes on, and
// churn of short-lived members.

// StrangerName is the application (lease table) and stream of the
// stranger cluster: another application on our gossip seeds and label,
// whose shard ids are the same as ours (every stream starts at
// shardId-000000000000).
const StrangerName = "kinactor-chaos-stranger"

// strangerShards is the stranger stream's shard count.
const strangerShards = 4

// ensureStrangers creates the stranger stream and its cluster (no node
// yet) the first time a stranger fault needs them.
func (r *runner) ensureStrangers(ctx context.Context) error {
	if r.strangers != nil {
		return nil
	}
	if _, err := awswait.EnsureStream(ctx, r.kc, StrangerName, strangerShards, 2*time.Minute); err != nil {
		return fmt.Errorf("stranger stream: %w", err)
	}
	env := []string{"AWS_ENDPOINT_URL_KINESIS=" + r.kinURL, "AWS_ENDPOINT_URL_DYNAMODB=" + r.ddbURL,
		"AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=local", "AWS_SECRET_ACCESS_KEY=local",
		"AWS_SESSION_TOKEN=", "AWS_PROFILE=", "AWS_ENDPOINT_URL=", "AWS_EC2_METADATA_DISABLED=true"}
	// Same node arguments as ours (label and key included), and
	// --test-faults: every member of a --test-faults cluster must use it.
	args := append(append([]string(nil), r.s.NodeArgs...), "--test-faults")
	c, err := clusterrun.Start(ctx, clusterrun.Options{Bin: r.o.Bin, Dir: filepath.Join(r.o.WorkDir, "stranger"),
		App: StrangerName, Stream: StrangerName, Env: env, ExtraArgs: args, Nodes: 0, NamePrefix: "stranger",
		ReadyTimeout: 90 * time.Second, StopTimeout: 45 * time.Second})
	if err != nil {
		return fmt.Errorf("stranger cluster: %w", err)
	}
	r.strangers = c
	return nil
}

// ourSeeds lists the gossip addresses of our running, unpaused nodes.
func (r *runner) ourSeeds() []string {
	var out []string
	for _, p := range r.c.Nodes() {
		if !p.Paused() && p.Gossip != "" {
			out = append(out, p.Gossip)
		}
	}
	return out
}

// stranger runs f.Nodes (default 2) nodes of another application on our
// seeds for f.For, with a producer of its own: a third of the way in one
// is killed (SIGKILL), at two thirds another starts, at the end the rest
// stop gracefully (releasing their leases: their releases and row changes
// are gossiped). A voice of the same application (see voice) says all
// along what its nodes only say when a send fails. Its own records must all be processed by its own nodes
// (else the fault had no teeth); what it does to us is checked by the
// verifier like any other fault (nothing lost, no stall over the bound)
// and by our nodes' refusals (kinactor_gossip_refused_total).
func (r *runner) stranger(ctx context.Context, f Fault, d *Done) error {
	if err := r.ensureStrangers(ctx); err != nil {
		return err
	}
	n := f.Nodes
	if n <= 0 {
		n = 2
	}
	opts := func() clusterrun.NodeOptions {
		return clusterrun.NodeOptions{Args: []string{"--join", strings.Join(r.ourSeeds(), ",")}}
	}
	var names []string
	for range n {
		p, err := r.strangers.AddNodeWith(ctx, opts())
		if err != nil {
			return err
		}
		names = append(names, p.Name)
	}
	refusedBefore := r.refusedTotal(ctx)
	v, err := r.startVoice(r.ourSeeds())
	if err != nil {
		return err
	}
	prod := clusterrun.StartProducer(r.kc, StrangerName, 8, 5)
	step := time.Duration(f.For) / 3
	var errs []error
	_ = backoff.Sleep(ctx, step)
	live := r.strangers.Nodes()
	if len(live) == 0 {
		return errors.New("no stranger node left to kill")
	}
	victim := live[0]
	errs = append(errs, r.strangers.Kill(victim))
	_ = backoff.Sleep(ctx, step)
	p, err := r.strangers.AddNodeWith(ctx, opts())
	if err != nil {
		errs = append(errs, err)
	} else {
		names = append(names, p.Name)
	}
	_ = backoff.Sleep(ctx, step)
	produced, perr := prod.Stop()
	errs = append(errs, perr)
	total := 0
	for _, k := range produced {
		total += k
	}
	// Its records must all be processed by its own nodes.
	lost := total
	deadline := time.Now().Add(30 * time.Second)
	for ctx.Err() == nil {
		if es, err := ledger.ReadDir(r.strangers.LedgerDir()); err == nil {
			lost = clusterrun.Analyze(es, produced, nil).Lost
		}
		if lost == 0 || time.Now().After(deadline) {
			break
		}
		_ = backoff.Sleep(ctx, 500*time.Millisecond)
	}
	for _, p := range r.strangers.Nodes() {
		errs = append(errs, r.strangers.Term(p))
	}
	said := v.close()
	d.End = time.Now()
	d.Refused = r.refusedTotal(ctx) - refusedBefore
	d.Detail = fmt.Sprintf("%d nodes of application %s (its own stream of %d shards, ids like ours) on our seeds: killed %s, started %s, stopped the rest; it processed %d of its %d records; its voice sent %d releases at counter 500; our nodes refused %.0f messages",
		n, StrangerName, strangerShards, victim.Name, strings.Join(names[n:], ","), total-lost, total, said, d.Refused)
	if lost > 0 {
		d.Problem = fmt.Sprintf("the stranger application lost %d of its %d records: it did not really run beside us", lost, total)
	}
	return errors.Join(errs...)
}

// refusedTotal sums kinactor_gossip_refused_total over our running,
// unpaused nodes.
func (r *runner) refusedTotal(ctx context.Context) float64 {
	total := 0.0
	for _, p := range r.c.Nodes() {
		if p.Paused() {
			continue
		}
		if m, err := r.c.Metrics(ctx, p); err == nil {
			total += m.Sum("kinactor_gossip_refused_total")
		}
	}
	return total
}

// takenLine matches the coordinator's log line for a lease taken.
var takenLine = regexp.MustCompile(`msg="lease taken" .*\bshard=(\S+)`)

// pauseAfterTake starts a node and stops it (SIGSTOP) the moment its log
// says it took a lease, for f.For (default LeaseExpiry + 5s), then wakes
// it (SIGCONT). Its peers declare it dead during the pause and take its
// shards; the verifier checks that on every shard it lost it delivered at
// most the batch in flight and wrote no checkpoint after waking (the
// takes still in flight when it stopped included: their answers arrive
// while it sleeps).
func (r *runner) pauseAfterTake(ctx context.Context, f Fault, d *Done) error {
	type paused struct {
		p      *clusterrun.Proc
		at     time.Time
		shards []string
		err    error
	}
	got := make(chan paused, 1)
	watch := func(p *clusterrun.Proc) {
		go func() {
			deadline := time.Now().Add(60 * time.Second)
			for {
				if shards := logMatches(p.Log, takenLine); len(shards) > 0 {
					err := r.c.Pause(p)
					got <- paused{p: p, at: time.Now(), shards: shards, err: err}
					return
				}
				if time.Now().After(deadline) || !p.Running() {
					got <- paused{p: p, err: fmt.Errorf("%s took no lease within 60s of its start", p.Name)}
					return
				}
				time.Sleep(2 * time.Millisecond) // polling a log file: there is nothing to wait on
			}
		}()
	}
	// AddNodeWith returns once the node is ready, which may be after the
	// pause (a take can come before the ready file): run it aside.
	added := make(chan error, 1)
	go func() {
		_, err := r.c.AddNodeWith(ctx, clusterrun.NodeOptions{Started: watch})
		added <- err
	}()
	var pz paused
	ready := false // AddNodeWith has returned (its answer is taken)
	select {
	case pz = <-got:
	case err := <-added:
		if err != nil {
			return err
		}
		ready = true
		pz = <-got
	}
	if pz.err != nil {
		return pz.err
	}
	d.At, d.Node, d.Shards = pz.at, pz.p.Name, pz.shards
	dur := time.Duration(f.For)
	d.Detail = fmt.Sprintf("%s stopped (SIGSTOP) right after taking %s, for %s", pz.p.Name, strings.Join(pz.shards, ","), dur)
	serr := backoff.Sleep(ctx, dur)
	uerr := r.c.Resume(pz.p)
	d.End = time.Now()
	var aerr error
	if !ready {
		select {
		case aerr = <-added:
		case <-time.After(90 * time.Second):
			aerr = fmt.Errorf("%s not ready 90s after waking", pz.p.Name)
		}
	}
	return errors.Join(serr, uerr, aerr)
}

// logMatches returns the first submatch of re on every line of the file at
// path, in order, without repeats.
func logMatches(path string, re *regexp.Regexp) []string {
	fh, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer fh.Close()
	var out []string
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil && !slices.Contains(out, m[1]) {
			out = append(out, m[1])
		}
	}
	return out
}

// refuse makes one node's gossip port refuse TCP connections for f.For
// (default 4s) while its UDP gossip goes on, and resets the TCP
// connections its peers hold to it for early crash detection: what a
// firewall that REJECTs does (through `kinactor node --test-faults`' POST
// /faults/refuse). Its peers may then declare it dead early; the check is
// that every running node's view holds every running node again within
// 10s of the end, not a split view that lasts.
func (r *runner) refuse(ctx context.Context, f Fault, d *Done) error {
	p, err := r.victim(f.Node)
	if err != nil {
		return err
	}
	if st, err := r.c.Status(ctx, p); err == nil {
		for _, s := range st.Shards {
			d.Shards = append(d.Shards, s.ShardID)
		}
		sort.Strings(d.Shards)
	}
	dur := time.Duration(f.For)
	d.Node, d.At = p.Name, time.Now()
	if err := r.post(ctx, p, "/faults/refuse?for="+url.QueryEscape(dur.String())); err != nil {
		return err
	}
	serr := backoff.Sleep(ctx, dur)
	d.End = time.Now()
	healed, missing := r.waitWholeViews(ctx, 10*time.Second)
	d.Detail = fmt.Sprintf("%s's gossip port refused TCP for %s (UDP went on, its watch connections reset; %d shards)", p.Name, dur, len(d.Shards))
	if missing != "" {
		d.Problem = fmt.Sprintf("split view 10s after %s's port stopped refusing: %s", p.Name, missing)
	} else {
		d.Healed = healed.Seconds()
		d.Detail += fmt.Sprintf("; every view whole %.2fs after", d.Healed)
	}
	return serr
}

// waitWholeViews polls every running, unpaused node's /status until each
// lists every other as a member, for at most limit. It returns how long
// that took after it was called, or what is still missing at the limit.
func (r *runner) waitWholeViews(ctx context.Context, limit time.Duration) (time.Duration, string) {
	start := time.Now()
	deadline := start.Add(limit)
	for {
		missing := r.viewGaps(ctx)
		if missing == "" {
			return time.Since(start), ""
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0, missing
		}
		_ = backoff.Sleep(ctx, 100*time.Millisecond)
	}
}

// viewGaps describes which running nodes miss which others in their view
// ("" when none does).
func (r *runner) viewGaps(ctx context.Context) string {
	var live []*clusterrun.Proc
	for _, p := range r.c.Nodes() {
		if !p.Paused() && p.Running() {
			live = append(live, p)
		}
	}
	var gaps []string
	for _, p := range live {
		st, err := r.c.Status(ctx, p)
		if err != nil {
			gaps = append(gaps, fmt.Sprintf("%s: no status (%v)", p.Name, err))
			continue
		}
		var miss []string
		for _, q := range live {
			if !slices.ContainsFunc(st.Members, func(m cluster.Member) bool { return m.Name == q.Name }) {
				miss = append(miss, q.Name)
			}
		}
		if len(miss) > 0 {
			gaps = append(gaps, fmt.Sprintf("%s misses %s", p.Name, strings.Join(miss, ",")))
		}
	}
	return strings.Join(gaps, "; ")
}

// churn starts f.Nodes (default 8) short-lived nodes one after another
// over f.For (default 30s), each killed (SIGKILL) after its share of the
// time, and records our first node's gossip bytes and goroutines at the
// start and the end. The verifier compares every node's ownership maps at
// the end of the run with the rows and members it holds (Report.Maps).
func (r *runner) churn(ctx context.Context, f Fault, d *Done) error {
	n := f.Nodes
	if n <= 0 {
		n = 8
	}
	dur := time.Duration(f.For)
	each := dur / time.Duration(n)
	d.At = time.Now()
	base := r.c.Nodes()
	var watch *clusterrun.Proc
	for _, p := range base {
		if !p.Paused() {
			watch = p
			break
		}
	}
	before := r.gossipLoad(ctx, watch)
	var errs []error
	var names []string
	for i := 0; i < n && ctx.Err() == nil; i++ {
		t0 := time.Now()
		p, err := r.c.AddNode(ctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		names = append(names, p.Name)
		_ = backoff.Sleep(ctx, each-time.Since(t0))
		r.scrape(ctx, p)
		errs = append(errs, r.c.Kill(p))
	}
	d.End = time.Now()
	after := r.gossipLoad(ctx, watch)
	d.Detail = fmt.Sprintf("%d short-lived nodes (%s) joined and were killed over %s; %s: %s at the start, %s at the end",
		len(names), strings.Join(names, ","), dur, nameOf(watch), before, after)
	return errors.Join(errs...)
}

func nameOf(p *clusterrun.Proc) string {
	if p == nil {
		return "-"
	}
	return p.Name
}

// gossipLoad describes p's gossip bytes sent so far and its goroutines.
func (r *runner) gossipLoad(ctx context.Context, p *clusterrun.Proc) string {
	if p == nil {
		return "-"
	}
	m, err := r.c.Metrics(ctx, p)
	if err != nil {
		return "no metrics"
	}
	return fmt.Sprintf("%.0f gossip bytes sent, %.0f goroutines", m.Sum("kinactor_gossip_sent_bytes_total"), m.Sum("go_goroutines"))
}

// collectMaps reads every running node's ownership map sizes for the
// report (Report.Maps) and fails the run where a map holds more entries
// than the node's rows and members allow (MapSlack more).
func (r *runner) collectMaps(ctx context.Context, rep *Report) {
	for _, p := range r.c.Nodes() {
		if p.Paused() {
			continue
		}
		st, err := r.c.Status(ctx, p)
		if err != nil || st.Maps == nil {
			continue
		}
		nm := NodeMaps{Node: p.Name, Rows: st.Maps["leases"], Members: len(st.Members), Sizes: st.Maps}
		rep.Maps = append(rep.Maps, nm)
	}
	rep.checkMaps()
}

// voice is a gossip member of the stranger application that says, every
// half second, what a stranger node says when a direct send of its
// release fails and it broadcasts it instead: "I released
// shardId-00000000000k at counter 500", for each of the stranger stream's
// shard ids (which are ours too), by broadcast and by a direct send to
// each of our nodes, with the stranger's application in the message and
// with none (as a node of an older version sends it). Real stranger nodes
// only do this when a send fails; the voice does it all the time, so that
// a node that took a stranger's word would be poisoned for sure: its
// expiry tracker would hold counter 500 and never take a silent holder's
// lease by expiry.
type voice struct {
	ms   *gossip.Membership
	stop chan struct{}
	done chan struct{}
	sent int
}

// startVoice joins the voice to seeds with our nodes' label and secret
// key (from the scenario's node arguments).
func (r *runner) startVoice(seeds []string) (*voice, error) {
	args := r.s.NodeArgs
	if _, ok := nodeArg(args, "secret-key-file"); ok {
		return nil, errors.New("stranger voice: scenarios with --secret-key-file are not supported (the voice speaks with the label only)")
	}
	label, _ := nodeArg(args, "label")
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}, BindPort: 0,
		Logger: log.New(io.Discard, "", 0)})
	if err != nil {
		return nil, fmt.Errorf("stranger voice: %w", err)
	}
	ms, err := gossip.Start(gossip.Config{Name: fmt.Sprintf("%s-voice-%d", StrangerName, time.Now().UnixNano()%100000),
		BindAddr: "127.0.0.1:0", Seeds: seeds, Label: label,
		Meta:      cluster.Meta{App: "stranger:" + StrangerName, Weight: 1},
		Transport: gossip.NewDropTransport(nt), // our --test-faults nodes dial with a preamble
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, fmt.Errorf("stranger voice: %w", err)
	}
	v := &voice{ms: ms, stop: make(chan struct{}), done: make(chan struct{})}
	go v.run(r)
	return v, nil
}

func (v *voice) run(r *runner) {
	defer close(v.done)
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		for k := range strangerShards {
			for _, app := range []string{"stranger:" + StrangerName, ""} {
				b, _ := json.Marshal(ownership.Message{App: app, Type: ownership.MsgReleased,
					Shard: fmt.Sprintf("shardId-%012d", k), Counter: 500, At: time.Now().UnixMilli()})
				v.ms.Broadcast(b)
				v.sent++
				for _, m := range v.ms.Members() {
					if m.Name != v.ms.Name() && v.ms.Send(m.Name, b) == nil {
						v.sent++
					}
				}
			}
		}
		select {
		case <-v.stop:
			return
		case <-t.C:
		}
	}
}

// close stops the voice and leaves the cluster.
func (v *voice) close() int {
	close(v.stop)
	<-v.done
	_ = v.ms.Leave(time.Second)
	return v.sent
}
