package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/batonproxy/baton/switcher"
)

var _ switcher.RolloutObserver = (*Service)(nil)

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
		}, []string{"service", "color"}),
		rollouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_rollouts_total",
			Help: "Canary rollouts that ended, by result (promoted, aborted by command, rolled_back by the judge or an exit, failed before the canary took traffic).",
		}, []string{"service", "result"}),
		rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_rollbacks_total",
			Help: "Times traffic went back to the old version: during a canary or a watch, by reason (error_rate, latency, exited, command), and by 'baton rollback' (command).",
		}, []string{"service", "reason"}),
	}
	reg.MustRegister(m.canaryPercent, m.rollouts, m.rollbacks)
	return m
}

// curry returns the vectors of one service (labels: its service label).
func (m rolloutMetrics) curry(svc prometheus.Labels) rolloutMetrics {
	return rolloutMetrics{
		canaryPercent: m.canaryPercent.MustCurryWith(svc),
		rollouts:      m.rollouts.MustCurryWith(svc),
		rollbacks:     m.rollbacks.MustCurryWith(svc),
	}
}

// zero exports a service's series at zero.
func (m rolloutMetrics) zero() {
	for _, c := range switcher.Colors {
		m.canaryPercent.WithLabelValues(c.String())
	}
	for _, r := range rollbackReasons {
		m.rollbacks.WithLabelValues(r)
	}
	for _, r := range rolloutResults {
		m.rollouts.WithLabelValues(r)
	}
}

// delete removes a service's series.
func (m rolloutMetrics) delete(svc prometheus.Labels) {
	m.canaryPercent.DeletePartialMatch(svc)
	m.rollouts.DeletePartialMatch(svc)
	m.rollbacks.DeletePartialMatch(svc)
}

// CanaryPercent implements switcher.RolloutObserver.
func (s *Service) CanaryPercent(c switcher.Color, percent int) {
	s.rollout.canaryPercent.WithLabelValues(c.String()).Set(float64(percent))
	if percent > 0 {
		s.rollout.canaryPercent.WithLabelValues(c.Other().String()).Set(0)
	}
}

// Rollback implements switcher.RolloutObserver.
func (s *Service) Rollback(reason string) { s.rollout.rollbacks.WithLabelValues(reason).Inc() }

// RolloutDone implements switcher.RolloutObserver.
func (s *Service) RolloutDone(result string) { s.rollout.rollouts.WithLabelValues(result).Inc() }
