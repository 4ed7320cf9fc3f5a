package workload

// Defaults of a rolling update (Update).
const (
	DefaultMaxSurge                = 1
	DefaultMaxUnavailable          = 0
	DefaultProgressDeadlineSeconds = 600
)

// Surge is maxSurge, defaulted. A nil Update has the defaults.
func (u *Update) Surge() int {
	if u == nil || u.MaxSurge == nil {
		return DefaultMaxSurge
	}
	return *u.MaxSurge
}

// Unavailable is maxUnavailable, defaulted.
func (u *Update) Unavailable() int {
	if u == nil || u.MaxUnavailable == nil {
		return DefaultMaxUnavailable
	}
	return *u.MaxUnavailable
}

// MinReady is minReadySeconds.
func (u *Update) MinReady() int {
	if u == nil {
		return 0
	}
	return u.MinReadySeconds
}

// ProgressDeadline is progressDeadlineSeconds, defaulted.
func (u *Update) ProgressDeadline() int {
	if u == nil || u.ProgressDeadlineSeconds <= 0 {
		return DefaultProgressDeadlineSeconds
	}
	return u.ProgressDeadlineSeconds
}

// HasReadiness reports whether any container, or the function, of w has a
// readiness probe: without one an instance is ready once RUNNING.
func (w Workload) HasReadiness() bool {
	for _, c := range w.Spec.Containers {
		if c.Healthcheck != nil && c.Healthcheck.Readiness != nil {
			return true
		}
	}
	f := w.Spec.Function
	return f != nil && f.Healthcheck != nil && f.Healthcheck.Readiness != nil
}
