// Package metrics owns kinactor's Prometheus collectors. They are created on
// a registry the caller passes in, never the global one, so two nodes in one
// process (as in tests) do not collide. Durations are in seconds.
//
// This package must not import actors, cluster or the root package.
package metrics

import (
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds every collector. The zero value is not usable; use New.
type Metrics struct {
	// The per-shard series are labelled stream (the stream's name) and
	// shard (the Kinesis shard id): see ShardLabels.
	RecordsProcessed   *prometheus.CounterVec // stream, shard
	BytesProcessed     *prometheus.CounterVec // stream, shard
	MillisBehindLatest *prometheus.GaugeVec   // stream, shard
	ShardLoad          *prometheus.GaugeVec   // stream, shard: the measured load weight
	LeaseReads         *prometheus.CounterVec // op: get, scan (requests, a Scan page each)
	LeaseReadItems     *prometheus.CounterVec // op: items those requests returned
	GetRecordsLatency  prometheus.Histogram   // seconds
	ProcessingLatency  prometheus.Histogram   // seconds, delivery to reply
	FetchErrors        *prometheus.CounterVec // kind: throttled, expired_iterator, other
	CheckpointsWritten prometheus.Counter     //
	CheckpointsRefused prometheus.Counter     //
	LeaseWrites        *prometheus.CounterVec // op, result (ok, lost, error)
	LeasesHeld         prometheus.Gauge       //
	LeaseLosses        prometheus.Counter     //
	ProcessorRestarts  prometheus.Counter     // supervisor restarts after a panic
	ProcessorFailures  *prometheus.CounterVec // outcome: retried, dead_lettered, shard_stopped, during_shutdown
	// RecordsDeadLettered counts records the dead-letter handler (the
	// failure destination) took: reason expired (MaxRecordAge) or failed
	// (their attempts used up).
	RecordsDeadLettered *prometheus.CounterVec
	// Bisections counts failed deliveries split in halves (BisectOnError).
	Bisections         prometheus.Counter
	ShardStates        *prometheus.GaugeVec   // state: number of shards in it
	ShardsFinished     *prometheus.CounterVec // outcome: released, shard-end, lease-lost, failed
	LeaseTakes         *prometheus.CounterVec // reason: free, released, dead_owner, expired, own
	ClusterMembers     prometheus.Gauge       // members this node sees
	OwnershipChanges   prometheus.Counter     // leases taken, released or lost by this node
	HandoffDuration    prometheus.Histogram   // seconds from asking a shard to hand off to its release
	ShardUnowned       prometheus.Histogram   // seconds a shard had no owner before this node took it
	KPLRecords         *prometheus.CounterVec // kind: user_record, out_of_range, malformed
	GossipSentBytes    *prometheus.CounterVec // type: the ownership message type (hb, rel, ...)
	GossipRefused      *prometheus.CounterVec // reason: app, stranger, key, type, malformed
	DeclaredDead       prometheus.Counter
	GossipSendFailures *prometheus.CounterVec // type: a direct send failed (hb dropped, released broadcast instead)
	// SinceProgress is kinactor_shard_seconds_since_progress{stream,shard}: for
	// each shard this node runs, how long ago it last made progress (a
	// fetch or a processor answer); read at scrape time from the source
	// set with SetProgressSource.
	SinceProgress *progressCollector

	registry prometheus.Gatherer
}

// ShardLabels are the labels of a per-shard series: the stream's name and
// the Kinesis shard id (in multi-stream mode, the parts of the lease key;
// in single-stream mode, the configured stream's name and the key).
type ShardLabels struct{ Stream, Shard string }

// progressCollector reports seconds since progress per shard from a source
// that is read at scrape time.
type progressCollector struct {
	desc *prometheus.Desc
	src  atomic.Pointer[func() map[ShardLabels]float64]
}

func (c *progressCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *progressCollector) Collect(ch chan<- prometheus.Metric) {
	f := c.src.Load()
	if f == nil {
		return
	}
	for l, secs := range (*f)() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, secs, l.Stream, l.Shard)
	}
}

// SetProgressSource sets where SinceProgress reads its values: a shard's
// labels → seconds since its last progress, for the shards this node runs
// (a map, so that no two series have the same labels).
func (m *Metrics) SetProgressSource(f func() map[ShardLabels]float64) {
	m.SinceProgress.src.Store(&f)
}

// New creates the collectors and registers them on reg. The namespace is
// "kinactor". If reg also implements prometheus.Gatherer, Handler serves it.
func New(reg prometheus.Registerer) *Metrics {
	ns := "kinactor"
	lat := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	shard := []string{"stream", "shard"} // per-shard series: see ShardLabels
	m := &Metrics{
		RecordsProcessed:    prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "records_processed_total", Help: "Records acknowledged by the processor."}, shard),
		BytesProcessed:      prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "bytes_processed_total", Help: "Record payload bytes acknowledged by the processor."}, shard),
		MillisBehindLatest:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "millis_behind_latest", Help: "MillisBehindLatest of the last GetRecords per shard."}, shard),
		ShardLoad:           prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "shard_load", Help: "Measured load weight per shard run here: bytes/s read ÷ 2 MiB/s + the processor's busy fraction, averaged (half-life 2 minutes)."}, shard),
		LeaseReads:          prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "lease_reads_total", Help: "Read requests sent to the lease table: get (one row) and scan (one page of a full read), retries included."}, []string{"op"}),
		LeaseReadItems:      prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "lease_read_items_total", Help: "Rows returned by the lease table's read requests, by op."}, []string{"op"}),
		GetRecordsLatency:   prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "get_records_duration_seconds", Help: "GetRecords call latency.", Buckets: lat}),
		ProcessingLatency:   prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "processing_duration_seconds", Help: "Time from delivering a batch to the processor's reply.", Buckets: lat}),
		FetchErrors:         prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "fetch_errors_total", Help: "GetRecords/GetShardIterator errors by kind."}, []string{"kind"}),
		CheckpointsWritten:  prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "checkpoints_written_total", Help: "Checkpoints written to the lease table."}),
		CheckpointsRefused:  prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "checkpoints_refused_total", Help: "Checkpoint requests refused (backwards, beyond delivered, malformed)."}),
		LeaseWrites:         prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "lease_writes_total", Help: "Lease-table writes by operation and result."}, []string{"op", "result"}),
		LeasesHeld:          prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "leases_held", Help: "Leases this node holds."}),
		LeaseLosses:         prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "lease_losses_total", Help: "Leases lost to a failed fenced write."}),
		ProcessorRestarts:   prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "processor_restarts_total", Help: "Processor actors restarted by their supervisor after a panic."}),
		ProcessorFailures:   prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "processor_failures_total", Help: "Failed batch deliveries by what happened next."}, []string{"outcome"}),
		RecordsDeadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "records_dead_lettered_total", Help: "Records the dead-letter handler (failure destination) took, by reason: expired (MaxRecordAge) or failed (attempts used up)."}, []string{"reason"}),
		Bisections:          prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "batch_bisections_total", Help: "Failed deliveries split in halves (BisectOnError)."}),
		ShardStates:         prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "shards", Help: "Shard actors on this node by state."}, []string{"state"}),
		ShardsFinished:      prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "shards_finished_total", Help: "Shard actors that finished, by outcome."}, []string{"outcome"}),
		LeaseTakes:          prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "lease_takes_total", Help: "Leases taken, by reason."}, []string{"reason"}),
		ClusterMembers:      prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "cluster_members", Help: "Live cluster members this node sees (1 without a cluster)."}),
		OwnershipChanges:    prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "ownership_changes_total", Help: "Leases this node took, released or lost."}),
		HandoffDuration:     prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "handoff_duration_seconds", Help: "From asking a shard to hand off until its lease was released.", Buckets: lat}),
		KPLRecords:          prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "kpl_records_total", Help: "KPL aggregates: user records delivered, dropped as outside the shard's hash range, and aggregates delivered whole as malformed."}, []string{"kind"}),
		GossipSentBytes:     prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "gossip_sent_bytes_total", Help: "Payload bytes of the ownership messages this node sent to other members (heartbeats with progress: hb; releases: released; shard lists: shards; shard loads with --balance load: load), by message type; a broadcast counts once."}, []string{"type"}),
		GossipRefused:       prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "gossip_refused_total", Help: "Ownership messages received by gossip and refused, by reason: app (for another application), stranger (the sender is not a member of this application in the view), key (names a key that is no shard id of this stream), type (unknown message type), malformed (does not decode)."}, []string{"reason"}),
		DeclaredDead:        prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "declared_dead_total", Help: "Times another member declared this node dead while it was alive (each time every shard verified its lease before delivering more)."}),
		GossipSendFailures:  prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "gossip_send_failures_total", Help: "Direct sends of ownership messages to one member that failed, by message type: a heartbeat (hb) is dropped, a release (released) is broadcast instead."}, []string{"type"}),
		ShardUnowned:        prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "shard_unowned_seconds", Help: "How long a shard had no owner before this node took it: from the release (sender's clock) or from seeing its owner die.", Buckets: lat}),
	}
	m.SinceProgress = &progressCollector{desc: prometheus.NewDesc(ns+"_shard_seconds_since_progress",
		"Seconds since each shard this node runs last made progress (a successful fetch or a processor answer).", shard, nil)}
	if g, ok := reg.(prometheus.Gatherer); ok {
		m.registry = g
	}
	reg.MustRegister(m.RecordsProcessed, m.BytesProcessed, m.MillisBehindLatest, m.ShardLoad, m.LeaseReads, m.LeaseReadItems, m.GetRecordsLatency,
		m.ProcessingLatency, m.FetchErrors, m.CheckpointsWritten, m.CheckpointsRefused, m.LeaseWrites,
		m.LeasesHeld, m.LeaseLosses, m.ProcessorRestarts, m.ProcessorFailures, m.RecordsDeadLettered, m.Bisections, m.ShardStates,
		m.ShardsFinished, m.LeaseTakes, m.ClusterMembers, m.OwnershipChanges, m.HandoffDuration, m.ShardUnowned, m.KPLRecords, m.GossipSentBytes,
		m.GossipRefused, m.GossipSendFailures, m.DeclaredDead, m.SinceProgress)
	return m
}

// Handler serves /metrics from the registry New was given (if it gathers),
// and /healthz answering 200 while healthy() is nil.
func (m *Metrics) Handler(healthy func() error) http.Handler {
	mux := http.NewServeMux()
	if m != nil && m.registry != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if healthy != nil {
			if err := healthy(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}
