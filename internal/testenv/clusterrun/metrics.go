package clusterrun

import (
	"bytes"
	"context"
	"fmt"
	"io"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics is a node's /metrics, parsed (expfmt): the metric families by
// name.
type Metrics map[string]*dto.MetricFamily

// ParseMetrics parses metrics in the Prometheus text format.
func ParseMetrics(r io.Reader) (Metrics, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("clusterrun: parsing metrics: %w", err)
	}
	return fams, nil
}

// Metrics gets and parses p's /metrics.
func (c *Cluster) Metrics(ctx context.Context, p *Proc) (Metrics, error) {
	b, err := c.get(ctx, p, "/metrics")
	if err != nil {
		return nil, err
	}
	m, err := ParseMetrics(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.Name, err)
	}
	return m, nil
}

// Sum adds the values of the series of the counter or gauge name whose
// labels include labels (name, value pairs); 0 if there are none.
func (m Metrics) Sum(name string, labels ...string) float64 {
	total := 0.0
	for _, s := range m.series(name, labels) {
		total += value(s)
	}
	return total
}

// SumBy adds the values of the series of the counter or gauge name by the
// value of their label label (series without it are left out).
func (m Metrics) SumBy(name, label string) map[string]float64 {
	by := map[string]float64{}
	for _, s := range m.series(name, nil) {
		for _, lp := range s.GetLabel() {
			if lp.GetName() == label {
				by[lp.GetValue()] += value(s)
			}
		}
	}
	return by
}

// Hist returns the sample count and sum of the histogram name's first
// series (a histogram without labels has one); zeros if there is none.
func (m Metrics) Hist(name string) (uint64, float64) {
	f := m[name]
	if f == nil || len(f.GetMetric()) == 0 {
		return 0, 0
	}
	h := f.GetMetric()[0].GetHistogram()
	return h.GetSampleCount(), h.GetSampleSum()
}

// series returns the series of name whose labels include labels.
func (m Metrics) series(name string, labels []string) []*dto.Metric {
	f := m[name]
	if f == nil {
		return nil
	}
	var out []*dto.Metric
next:
	for _, s := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			if !hasLabel(s, labels[i], labels[i+1]) {
				continue next
			}
		}
		out = append(out, s)
	}
	return out
}

func hasLabel(s *dto.Metric, name, value string) bool {
	for _, lp := range s.GetLabel() {
		if lp.GetName() == name && lp.GetValue() == value {
			return true
		}
	}
	return false
}

// value is a counter's or a gauge's value (0 for other types).
func value(s *dto.Metric) float64 {
	switch {
	case s.Counter != nil:
		return s.Counter.GetValue()
	case s.Gauge != nil:
		return s.Gauge.GetValue()
	}
	return 0
}
