package policy

import "time"

// Delivery of a new token to the pods that mount the Secret: how long it may take, and whether a
// token's renewal leaves that long before the old token expires.
//
// The kubelet rewrites a pod's Secret volume when it syncs the pod: at once when the pod object
// changes (a nudge), otherwise at its periodic sync, which comes up to about 1.5 × its
// syncFrequency after the previous one. Measured on a real node (docs/consuming-tokens.md): with
// the default syncFrequency of 1 minute, p99 80–85 s without a nudge, under 2 s with one.

// KubeletSyncFactor: the kubelet's periodic sync of a pod comes up to this many syncFrequencies
// after the previous one (its jitter).
const KubeletSyncFactor = 1.5

// DefaultKubeletSyncFrequency is the kubelet's default syncFrequency.
const DefaultKubeletSyncFrequency = time.Minute

// NudgedDelivery is the time allowed for a nudged pod to receive a new token: the measured p99
// (under 2 s) with headroom for the renewal itself (Keycloak's answer, the work queue).
const NudgedDelivery = 5 * time.Second

// Delivery describes a resource's consumers.
type Delivery struct {
	// KubeletSyncFrequency of the nodes (zero: DefaultKubeletSyncFrequency).
	KubeletSyncFrequency time.Duration
	// NudgedPods is how many consumer pods the operator nudges (labelled, mounting the Secret as
	// a volume); 0 when there are none or nudging is off.
	NudgedPods int
	// NudgeQPS is the rate limit of nudges (pods per second, all resources together; 0: none).
	NudgeQPS float64
}

// KubeletDelay is the longest a pod that is not nudged may wait for a new token.
func (d Delivery) KubeletDelay() time.Duration {
	f := d.KubeletSyncFrequency
	if f <= 0 {
		f = DefaultKubeletSyncFrequency
	}
	return time.Duration(KubeletSyncFactor * float64(f))
}

// Need is how long the consumers may need to receive a new token. With nudged pods it is
// NudgedDelivery plus the time the rate limit takes to reach the last of them; without, the
// kubelet's periodic sync. (Pods the operator does not see, those without the label, always
// wait for the periodic sync: the message of the condition says so.)
func (d Delivery) Need() time.Duration {
	if d.NudgedPods <= 0 {
		return d.KubeletDelay()
	}
	need := NudgedDelivery
	if d.NudgeQPS > 0 {
		need += time.Duration(float64(d.NudgedPods) / d.NudgeQPS * float64(time.Second)).Round(time.Second)
	}
	return need
}

// Margin is the least time a token of this lifetime leaves between its scheduled renewal and its
// expiry: RenewalTime without jitter (the jitter only renews earlier). It depends on the lifetime
// and renewBefore only, so it does not change from one token to the next.
func Margin(lifetime time.Duration, renewBefore *time.Duration) time.Duration {
	if lifetime <= 0 {
		return 0
	}
	t0 := time.Unix(0, 0)
	return t0.Add(lifetime).Sub(RenewalTime(t0, t0.Add(lifetime), renewBefore, 0).RenewAt)
}

// MinSafeLifetime is the shortest token lifetime, in whole seconds, whose Margin covers need
// with the default renewal (at two thirds of the lifetime; spec.renewBefore unset). With
// renewBefore set, the margin is renewBefore itself: it must be at least need.
func MinSafeLifetime(need time.Duration) time.Duration {
	// The default margin, lifetime minus two thirds of it truncated to whole seconds, never
	// shrinks as the lifetime grows: bisect over whole seconds.
	lo, hi := int64(1), int64(48*time.Hour/time.Second)
	for lo < hi {
		mid := lo + (hi-lo)/2
		if Margin(time.Duration(mid)*time.Second, nil) >= need {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return time.Duration(lo) * time.Second
}

// DeliveryCheck is the verdict on a resource's delivery.
type DeliveryCheck struct {
	// AtRisk: consumers may receive a new token only after the old one expired.
	AtRisk bool
	// Margin between renewal and expiry, and Need, the time the consumers may need.
	Margin, Need time.Duration
	// MinLifetime is the shortest safe lifetime with the default renewal.
	MinLifetime time.Duration
}

// CheckDelivery compares a token lifetime's margin with the consumers' need.
func CheckDelivery(lifetime time.Duration, renewBefore *time.Duration, d Delivery) DeliveryCheck {
	c := DeliveryCheck{Margin: Margin(lifetime, renewBefore), Need: d.Need()}
	c.AtRisk = c.Margin < c.Need
	c.MinLifetime = MinSafeLifetime(c.Need)
	return c
}
