package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/kinactor/kinactor"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/multistream"
	"github.com/kinactor/kinactor/internal/stream"
)

// runStatus implements `kinactor status`: the stream's shards joined with
// the lease table (for a multi-stream application, the named streams'
// shards joined with their rows, and a count of the rows kept for streams
// not named), and with --http a node's own view (members and shards).
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	app := fs.String("app", "", "application name, i.e. the lease table (required)")
	streamName := fs.String("stream", "", "Kinesis stream name, or comma-separated names of a multi-stream application (required)")
	multi := fs.Bool("multi-stream", false, "the table has multi-stream keys even for one --stream (found by itself when it has rows)")
	httpAddr := fs.String("http", "", "a node's --http host:port: also print its /status")
	timeout := fs.Duration("timeout", 30*time.Second, "bound on the whole command")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kinactor status --app NAME --stream NAME[,NAME...] [--multi-stream] [--http HOST:PORT]\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("status: unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *app == "" {
		return errors.New("status: --app is required")
	}
	if *streamName == "" {
		return errors.New("status: --stream is required")
	}
	if *timeout <= 0 {
		return fmt.Errorf("status: invalid --timeout %s (must be positive)", *timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("status: loading AWS config: %w", err)
	}
	ddb := dynamoClient(awsCfg)
	leases, err := lease.NewDynamoStore(ddb, *app).List(ctx)
	if err != nil {
		return fmt.Errorf("status: lease table %s: %w", *app, err)
	}
	names, err := statusStreamNames(*streamName)
	if err != nil {
		return err
	}
	kc := stream.NewSDKClient(awsCfg)
	if !*multi && len(names) == 1 && !slices.ContainsFunc(leases, func(l lease.Lease) bool { return multistream.IsKey(l.Key) }) {
		shards, err := stream.NewClient(kc, names[0], "").ListShards(ctx)
		if err != nil {
			return fmt.Errorf("status: stream %s: %w", names[0], err)
		}
		if err := printShardTable(stdout, shards, leases, nil); err != nil {
			return err
		}
	} else {
		if l, ok := plainRow(leases); ok {
			return fmt.Errorf("status: lease table %s holds single-stream rows (row %q): name one --stream, without --multi-stream", *app, l)
		}
		var specs []multistream.Spec
		for _, n := range names {
			specs = append(specs, multistream.Spec{Name: n})
		}
		resolved, err := (&multistream.Resolver{API: kc}).Resolve(ctx, specs)
		if err != nil {
			return fmt.Errorf("status: %w", err)
		}
		set := multistream.NewSet(kc)
		set.Update(resolved)
		shards, err := set.ListShards(ctx)
		if err != nil {
			return fmt.Errorf("status: listing streams %s: %w", strings.Join(names, ","), err)
		}
		named := map[string]string{} // stream id → name
		for _, r := range resolved {
			named[r.ID.String()] = r.ID.Name
		}
		if err := printShardTable(stdout, shards, leases, named); err != nil {
			return err
		}
	}
	if *httpAddr == "" {
		return nil
	}

	st, err := fetchNodeStatus(ctx, *httpAddr)
	if err != nil {
		return fmt.Errorf("status: --http %s: %w", *httpAddr, err)
	}
	fmt.Fprintln(stdout)
	return printNodeStatus(stdout, st)
}

// statusStreamNames splits --stream: one name or comma-separated names,
// none empty and each a valid stream name.
func statusStreamNames(flagValue string) ([]string, error) {
	var out []string
	for _, n := range strings.Split(flagValue, ",") {
		n = strings.TrimSpace(n)
		if !multistream.ValidName(n) {
			return nil, fmt.Errorf("status: invalid --stream %q: %q is not a stream name", flagValue, n)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// plainRow returns the key of a row that is not a multi-stream key, if any.
func plainRow(leases []lease.Lease) (string, bool) {
	for _, l := range leases {
		if !multistream.IsKey(l.Key) {
			return l.Key, true
		}
	}
	return "", false
}

// printShardTable prints one line per shard: every shard listed and every
// row of the table not listed (past retention). named is nil for a
// single-stream table; for a multi-stream one it maps the stream ids
// (account:name:epoch) of the named streams to their names: the table
// then has a stream column, shard ids are printed without their stream,
// and the rows of other streams (kept for a later return) are counted
// under the table, by stream.
func printShardTable(w io.Writer, shards []stream.Shard, leases []lease.Lease, named map[string]string) error {
	byKey := map[string]lease.Lease{}
	others := map[string]int{} // rows of streams not named, by stream id
	for _, l := range leases {
		if named != nil {
			if _, ok := named[multistream.StreamOf(l.Key)]; !ok {
				others[multistream.StreamOf(l.Key)]++
				continue
			}
		}
		byKey[l.Key] = l
	}
	ids := []string{}
	open := map[string]bool{}
	for _, s := range shards {
		ids = append(ids, s.ID)
		open[s.ID] = !s.Closed()
	}
	for k := range byKey {
		if _, ok := open[k]; !ok {
			ids = append(ids, k) // a lease of a shard past retention
		}
	}
	slices.Sort(ids)
	short := func(ids []string) []string {
		if named == nil {
			return ids
		}
		out := make([]string, len(ids))
		for i, id := range ids {
			out[i] = multistream.ShardOf(id)
		}
		return out
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if named != nil {
		fmt.Fprint(tw, "stream\t")
	}
	fmt.Fprintln(tw, "shard\tstate\towner\tcounter\tcheckpoint\tparents\tchildren")
	for _, id := range ids {
		state := "closed"
		if o, listed := open[id]; !listed {
			state = "expired" // no longer listed by the stream
		} else if o {
			state = "open"
		}
		l, has := byKey[id]
		if has && l.Checkpoint.IsShardEnd() {
			state = "finished"
		}
		owner, counter, cp := "-", "-", "-"
		var parents, children []string
		for _, s := range shards {
			if s.ID == id {
				parents = s.Parents()
			}
		}
		if has {
			owner, counter, cp = dashIfEmpty(l.Owner), fmt.Sprint(l.Counter), abbrevSeq(l.Checkpoint.SequenceNumber)
			if len(parents) == 0 {
				parents = l.ParentShardIDs
			}
			children = l.ChildShardIDs
		}
		for _, s := range stream.ChildrenFromList(shards, id) {
			if !slices.Contains(children, s.ID) {
				children = append(children, s.ID)
			}
		}
		if named != nil {
			fmt.Fprintf(tw, "%s\t", named[multistream.StreamOf(id)])
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", multistream.ShardOf(id), state, owner, counter, cp, joinOrDash(short(parents)), joinOrDash(short(children)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(others) > 0 {
		var parts []string
		for _, sid := range slices.Sorted(maps.Keys(others)) {
			parts = append(parts, fmt.Sprintf("%s (%s)", sid, pluralCount(others[sid], "row")))
		}
		fmt.Fprintf(w, "\nrows kept for streams not named: %s\n", strings.Join(parts, ", "))
	}
	return nil
}

// printNodeStatus prints a node's /status: its members, its health (when it
// reports unhealthy services or refused shards), and its shards with their
// lag, time since progress and stall.
func printNodeStatus(w io.Writer, st kinactor.NodeStatus) error {
	fmt.Fprintf(w, "node %s sees %s:\n", st.Node, pluralCount(len(st.Members), "member"))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "member\taddr\tstate")
	for _, m := range st.Members {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", m.Name, dashIfEmpty(m.Addr), m.State)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Unhealthy) > 0 || len(st.Refused) > 0 {
		fmt.Fprintln(w)
	}
	if len(st.Unhealthy) > 0 {
		fmt.Fprintf(w, "node %s is unhealthy: cannot use %s\n", st.Node, strings.Join(st.Unhealthy, ", "))
	}
	if len(st.Refused) > 0 {
		fmt.Fprintf(w, "node %s refuses %s: %s\n", st.Node, pluralCount(len(st.Refused), "shard"), strings.Join(st.Refused, ", "))
	}
	stalled := 0
	for _, s := range st.Shards {
		if s.Stalled {
			stalled++
		}
	}
	head := fmt.Sprintf("node %s runs %s", st.Node, pluralCount(len(st.Shards), "shard"))
	if stalled > 0 {
		head += fmt.Sprintf(", %d stalled", stalled)
	}
	fmt.Fprintf(w, "\n%s:\n", head)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "shard\tactor state\tcheckpoint\tbehind latest\tsince progress\tstall")
	for _, s := range st.Shards {
		behind := shortDuration(time.Duration(s.MillisBehindLatest) * time.Millisecond)
		since := shortDuration(time.Duration(s.SinceProgress * float64(time.Second)))
		stall := "-"
		if s.Stalled {
			stall = "STALLED"
			if s.StallCause != "" {
				stall += " (" + s.StallCause + ")"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.LeaseKey(), dashIfEmpty(s.State), abbrevSeq(s.Checkpoint), behind, since, stall)
	}
	return tw.Flush()
}

// pluralCount is "1 shard", "2 shards".
func pluralCount(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// shortDuration renders d compactly with at most two units and about
// three significant digits: 0s, 850ms, 12.3s, 4m05s, 2h05m, 3d04h.
func shortDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + shortDuration(-d)
	case d == 0:
		return "0s"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < 10*time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Hour:
		d = d.Truncate(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 24*time.Hour:
		d = d.Truncate(time.Minute)
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	d = d.Truncate(time.Hour)
	return fmt.Sprintf("%dd%02dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

// fetchNodeStatus gets the node's /status at addr (host:port or a URL).
func fetchNodeStatus(ctx context.Context, addr string) (kinactor.NodeStatus, error) {
	var st kinactor.NodeStatus
	url := addr
	if !strings.Contains(url, "://") {
		url = "http://" + addr
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(url, "/")+"/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return st, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET /status: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	if st, err = decodeNodeStatus(body); err != nil {
		return st, fmt.Errorf("GET /status: %w", err)
	}
	return st, nil
}

// decodeNodeStatus decodes a /status body.
func decodeNodeStatus(body []byte) (kinactor.NodeStatus, error) {
	var st kinactor.NodeStatus
	err := json.Unmarshal(body, &st)
	return st, err
}

// abbrevSeq shortens a sequence number to its first 8 and last 6 digits;
// sentinels (TRIM_HORIZON, SHARD_END, ...) are kept.
func abbrevSeq(s string) string {
	if s == "" {
		return "-"
	}
	if len(s) <= 17 {
		return s
	}
	return s[:8] + "…" + s[len(s)-6:]
}

func joinOrDash(ss []string) string {
	if len(ss) == 0 {
		return "-"
	}
	return strings.Join(ss, ",")
}
