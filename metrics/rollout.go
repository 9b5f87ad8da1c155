package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/batonproxy/baton/switcher"
)

var _ switcher.RolloutObserver = (*Metrics)(nil)

// rolloutMetrics are the canary's: its share, its outcomes and the
// rollbacks by reason.
type rolloutMetrics struct {
	canaryPercent *prometheus.GaugeVec
	rollouts      *prometheus.CounterVec
	rollbacks     *prometheus.CounterVec
}

// rollbackReasons and rolloutResults are exported at zero from the start,
// so that alerts on increase() see a series before the first event.
var (
	rollbackReasons = []string{switcher.ReasonErrorRate, switcher.ReasonLatency, switcher.ReasonExited, switcher.ReasonCommand}
	rolloutResults  = []string{"promoted", "aborted", "rolled_back", "failed"}
)

func newRolloutMetrics(reg prometheus.Registerer) rolloutMetrics {
	m := rolloutMetrics{
		canaryPercent: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "baton_canary_percent",
			Help: "Share of requests (0-100) the canary colour takes, besides allow-listed ones; 0 for both colours when no canary runs.",
		}, []string{"color"}),
		rollouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_rollouts_total",
			Help: "Canary rollouts that ended, by result (promoted, aborted by command, rolled_back by the judge or an exit, failed before the canary took traffic).",
		}, []string{"result"}),
		rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_rollbacks_total",
			Help: "Times traffic went back to the old version: during a canary or a watch, by reason (error_rate, latency, exited, command), and by 'baton rollback' (command).",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.canaryPercent, m.rollouts, m.rollbacks)
	for _, c := range switcher.Colors {
		m.canaryPercent.WithLabelValues(c.String())
	}
	for _, r := range rollbackReasons {
		m.rollbacks.WithLabelValues(r)
	}
	for _, r := range rolloutResults {
		m.rollouts.WithLabelValues(r)
	}
	return m
}

// CanaryPercent implements switcher.RolloutObserver.
func (m *Metrics) CanaryPercent(c switcher.Color, percent int) {
	m.rollout.canaryPercent.WithLabelValues(c.String()).Set(float64(percent))
	if percent > 0 {
		m.rollout.canaryPercent.WithLabelValues(c.Other().String()).Set(0)
	}
}

// Rollback implements switcher.RolloutObserver.
func (m *Metrics) Rollback(reason string) { m.rollout.rollbacks.WithLabelValues(reason).Inc() }

// RolloutDone implements switcher.RolloutObserver.
func (m *Metrics) RolloutDone(result string) { m.rollout.rollouts.WithLabelValues(result).Inc() }
